"""Many bags at once (``noposplat-ros process-bags``): the parts that need no Ray.

- ``output_dirs``: one output directory per bag, written under a temporary name and renamed when
  complete (a completion marker written last), resume detection, clean-up after a crash or Ctrl-C.
- ``summary``: per-bag outcomes, the fleet ``summary.json`` and the progress line.
- ``worker``: processes bags one after another with one predictor (a checkpoint is loaded once per
  worker); the command wraps it in a Ray actor.
"""

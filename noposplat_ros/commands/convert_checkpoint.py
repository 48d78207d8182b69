"""Convert an official NoPoSplat Lightning checkpoint (.ckpt) to a tensors-only .safetensors file."""
from __future__ import annotations

import argparse
import pathlib
import sys

HELP = "convert an official NoPoSplat .ckpt to .safetensors (tensors only, 'encoder.' prefix stripped)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=pathlib.Path, help="official checkpoint (.ckpt, e.g. re10k.ckpt)")
    parser.add_argument("output", type=pathlib.Path, help="output .safetensors file")
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="allow full unpickling of the input if the safe tensors-only load fails (only for files you trust: "
        "unpickling can run arbitrary code)",
    )
    parser.add_argument(
        "--model-config", type=pathlib.Path, default=None,
        help="model-config JSON to validate against (default: the released NoPoSplat configuration)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite the output file")


def convert(input_path: pathlib.Path, output_path: pathlib.Path, *, allow_pickle: bool, model_config: pathlib.Path | None) -> int:
    """Load, validate against the model's keys/shapes, write safetensors. Returns the number of tensors."""
    from safetensors.torch import save_file

    from noposplat_ros.predictors.network.checkpoint import check_state_dict, deduplicate_aliases, load_state_dict_file
    from noposplat_ros.predictors.network import NoPoSplatConfig, build_model

    state = load_state_dict_file(input_path, allow_pickle=allow_pickle)
    cfg = NoPoSplatConfig.from_json(model_config) if model_config else NoPoSplatConfig.released(256)
    check_state_dict(build_model(cfg, device="meta"), state, input_path)
    # aliases share storage in the .ckpt; safetensors refuses shared tensors, the loader restores them
    state = {k: v.contiguous() for k, v in deduplicate_aliases(state).items()}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".part")
    save_file(state, str(tmp), metadata={"format": "pt", "source": input_path.name, "converted_by": "noposplat-ros"})
    tmp.replace(output_path)
    return len(state)


def run(args: argparse.Namespace) -> int:
    from noposplat_ros.predictors.network.checkpoint import CheckpointError

    if args.output.exists() and not args.force:
        print(f"error: {args.output} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    try:
        n = convert(args.input, args.output, allow_pickle=args.allow_pickle, model_config=args.model_config)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({n} tensors)")
    return 0

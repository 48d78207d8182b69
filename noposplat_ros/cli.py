"""`noposplat-ros` command line: one sub-command per module under ``noposplat_ros.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name on the command line -> module under noposplat_ros.commands
COMMANDS = {
    "pair": "pair",
    "convert-checkpoint": "convert_checkpoint",
    "demo": "demo",
    "play": "play",
    "process-bag": "process_bag",
    "soak": "soak",
    "view": "view",
    "process-bags": "process_bags",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noposplat-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"noposplat_ros.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"noposplat_ros.commands.{module_name}":
                raise
            continue  # command not part of this build
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

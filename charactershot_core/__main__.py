"""Headless command line: ``python -m charactershot_core <command> ...``.

Each stage registers its own sub-commands (``register(subparsers)`` in its ``cli`` module); ``info`` lists what
the pack offers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CharacterShotError
from .naming import check_path

# modules that add sub-commands; each has register(subparsers) -> None
COMMAND_MODULES = ["charactershot_core.cli_info", "charactershot_core.models.cli", "charactershot_core.gaussians.cli",
                   "charactershot_core.sampling.cli", "charactershot_core.distributed.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m charactershot_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):  # stage not in this build
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        for attr in ("out", "metrics"):  # paths the command creates: names legal on every system
            value = getattr(args, attr, None)
            if isinstance(value, str) and value:
                check_path(value, f"--{attr}", "path")
        return int(args.func(args) or 0)
    except CharacterShotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

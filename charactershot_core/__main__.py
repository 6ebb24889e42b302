"""Headless command line: ``python -m charactershot_core <command> ...``.

Each stage registers its own sub-commands (``register(subparsers)`` in its ``cli`` module); ``info`` lists what
the pack offers.
"""

from __future__ import annotations

import argparse
import sys
import time

from .errors import CharacterShotError
from .naming import check_path


def build_parser() -> argparse.ArgumentParser:
    """Every stage's sub-commands; each ``cli`` module has ``register(subparsers) -> None`` (imported here, when the
    parser is built, so that importing this module stays cheap)."""
    from . import cli_info
    from .distributed import cli as distributed_cli
    from .gaussians import cli as gaussians_cli
    from .models import cli as models_cli
    from .sampling import cli as sampling_cli

    parser = argparse.ArgumentParser(prog="python -m charactershot_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for mod in (cli_info, models_cli, gaussians_cli, sampling_cli, distributed_cli):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # before the stages' modules (and torch) are imported: time budgets count them
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
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

"""``compressor`` command line: one subcommand per stage; the work lives in the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compressor.models import Registry, UnknownNameError

from .. import __version__
from ..errors import UserError
from . import (
    ablate_hints_cmd,
    cross_distill_cmd,
    demo_cmd,
    distill_cmd,
    export_cmd,
    hevc_cmd,
    inspect_cmd,
    profile_cmd,
    report_cmd,
    run_cmd,
    select_hints_cmd,
)

# Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: Registry = Registry("command")
_ALL = (
    inspect_cmd,
    select_hints_cmd,
    distill_cmd,
    export_cmd,
    profile_cmd,
    report_cmd,
    run_cmd,
    demo_cmd,
    hevc_cmd,
    cross_distill_cmd,
    ablate_hints_cmd,
)
for _module in _ALL:
    COMMANDS.register(_module.NAME, _module)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end like every other bad input: one ``error:`` line and exit 2 (not argparse's usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="compressor",
        description="Compress a trained vision model for the edge: select hints, distill, export, profile.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = COMMANDS.get(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def _message(e: Exception) -> str:
    """The user's message; a DataLoader worker wraps it in its own traceback text, which is cut off."""
    text = str(e.args[0] if e.args else e)
    if "Traceback (most recent call last)" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(("compressor.", "UserError")) and ": " in last else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage mistakes (2) end here; callers of main() get the code
        return int(e.code or 0)
    try:
        return int(args.handler(args) or 0)
    except (UserError, UnknownNameError) as e:
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

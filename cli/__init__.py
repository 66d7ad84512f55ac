"""The ``zipar`` command line: one module per command (``zipar generate`` is ``zipar.cli.generate``).

Building the parser imports no torch (``zipar --help`` and ``zipar steps`` stay instant): each command
imports what it needs when it runs. Errors about a setting name it as the flag the user typed
(``--window``), through ``common.flag``.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

COMMANDS = ("generate", "sample", "demo", "bench", "steps", "convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipar", description="ZipAR parallel decoding for AR image models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..zipar_core.errors import render
    from .common import flag

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: say what is wrong, no traceback
        print(f"zipar {args.command}: error: {render(e, flag)}", file=sys.stderr)
        return 2
    return 0

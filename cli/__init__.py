"""The ``zipar`` command line: one module per command (``zipar generate`` is ``zipar.cli.generate``).

Building the parser imports no torch (``zipar --help`` and ``zipar steps`` stay instant): each command
imports what it needs when it runs. Errors about a setting name it as the flag the user typed
(``--window``), through ``common.flag``; a bad input or an unusable path is one line and exit code 2;
Ctrl-C is one line and exit code 130 (``zipar sample`` resumes where it stopped).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from importlib import import_module

COMMANDS = ("generate", "sample", "demo", "bench", "steps", "convert", "memory")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one line (not the whole usage first) that says where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zipar", description="ZipAR parallel decoding for AR image models")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..zipar_core.errors import render
    from .common import flag

    args = build_parser().parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None):  # a warning, not a code listing
        print(f"zipar {args.command}: warning: {render(message, flag)}", file=sys.stderr)
    shown, warnings.showwarning = warnings.showwarning, one_line
    try:
        args.func(args)
    except KeyboardInterrupt as e:
        print(f"zipar {args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # bad input, a path that cannot be used: say what is wrong, no traceback
        print(f"zipar {args.command}: error: {render(e, flag)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown
    return 0

"""The ``zipar`` command line."""
from __future__ import annotations

import argparse
import sys


def _steps(args) -> None:
    from .zipar_core import ZipARConfig, count_passes
    from .zipar_core.layout import TokenLayout

    layout = TokenLayout(args.rows, args.cols, prefix=1, eol=args.eol)
    ntp = count_passes(layout, ZipARConfig(mode="ntp"))
    print(f"grid {args.rows}x{args.cols}{' + EOL' if args.eol else ''}: {layout.num_tokens} tokens")
    print(f"{'mode':<28}{'passes':>8}{'of NTP':>9}")
    print(f"{'ntp':<28}{ntp:>8}{1:>9.0%}")
    windows = args.windows or sorted({w for w in (4, 8, 12, 16) if w < args.cols} | {max(1, args.cols // 2)})
    for s in windows:
        for paper in (False, True):
            n = count_passes(layout, ZipARConfig(window=s, paper_first_row=paper))
            print(f"{f'fixed s={s}' + (' (paper row 0)' if paper else ''):<28}{n:>8}{n / ntp:>9.0%}")
        if s < args.cols:  # every row pays at least one verification pass
            low = (args.rows - 1) * (s + 1) + args.cols
            print(f"{f'adaptive s_min={s}':<28}{f'>={low}':>8}{low / ntp:>9.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zipar", description="ZipAR parallel decoding for AR image models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="forward passes of every decoding mode for a token grid")
    p.add_argument("--rows", type=int, default=24)
    p.add_argument("--cols", type=int, default=24)
    p.add_argument("--eol", action="store_true", help="the model feeds an end-of-row token (Lumina, Emu3)")
    p.add_argument("--windows", type=int, nargs="*", help="windows to list (default: a few)")
    p.set_defaults(func=_steps)
    from .demo import add_parser as add_demo

    add_demo(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # bad input: say what is wrong, no traceback
        print(f"zipar: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

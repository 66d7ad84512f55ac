"""The ``zipar`` command line."""
from __future__ import annotations

import argparse
import sys


def steps_table(rows: int, cols: int, eol: bool = False, windows: list[int] | None = None) -> str:
    """Forward passes (prefill included) of every mode for a grid, as a Markdown table.

    Fixed windows are exact (eq. 1); adaptive counts depend on the sampled tokens, so the table gives their
    lower bound: every row pays at least one verification pass (offset s_min + 1).
    """
    from .zipar_core import ZipARConfig, count_passes
    from .zipar_core.layout import TokenLayout

    layout = TokenLayout(rows, cols, prefix=1, eol=eol)
    ntp = count_passes(layout, ZipARConfig(mode="ntp"))
    windows = windows or [w for w in (4, 8, 12, 16) if w < cols] or [max(1, cols // 2)]
    lines = [f"| {rows}x{cols}{' + EOL' if eol else ''} | passes | row 0 first (paper) | of NTP |",
             "|---|---:|---:|---:|", f"| ntp | {ntp} | {ntp} | 100% |"]
    if eol:
        lines.append(f"| raster with EOL passes (model's own generate) | {rows * (cols + 1)} | | |")
    for s in windows:
        fixed = [count_passes(layout, ZipARConfig(window=s, paper_first_row=p)) for p in (False, True)]
        lines.append(f"| fixed s={s} | {fixed[0]} | {fixed[1]} | {fixed[0] / ntp:.0%} |")
    for s in windows:
        if s < cols:
            low = [(rows - 1) * (s + 1) + cols, 2 * cols + (rows - 2) * (s + 1)]
            lines.append(f"| adaptive s_min={s} | >= {low[0]} | >= {low[1]} | >= {low[0] / ntp:.0%} |")
    return "\n".join(lines)


def _steps(args) -> None:
    print(steps_table(args.rows, args.cols, args.eol, args.windows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zipar", description="ZipAR parallel decoding for AR image models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="forward passes of every decoding mode for a token grid")
    p.add_argument("--rows", type=int, default=24)
    p.add_argument("--cols", type=int, default=24)
    p.add_argument("--eol", action="store_true", help="the model feeds an end-of-row token (Lumina, Emu3)")
    p.add_argument("--windows", type=int, nargs="*", help="windows to list (default: a few)")
    p.set_defaults(func=_steps)
    from .bench import add_parser as add_bench
    from .demo import add_parser as add_demo
    from .sampling_cli import add_parsers as add_sampling

    add_demo(sub)
    add_bench(sub)
    add_sampling(sub)  # generate, sample (ZipARPipeline; diffusers is imported only when they run)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # bad input: say what is wrong, no traceback
        print(f"zipar: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

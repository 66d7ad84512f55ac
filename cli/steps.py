"""``zipar steps``: forward passes of every decoding mode for a token grid (no model, no torch)."""
from __future__ import annotations

from .common import positive_int


def steps_table(rows: int, cols: int, eol: bool = False, windows: list[int] | None = None) -> str:
    """Forward passes (prefill included) of every mode for a grid, as a Markdown table.

    Fixed windows are exact (eq. 1); adaptive counts depend on the sampled tokens, so the table gives their
    lower bound: every row pays at least one verification pass (offset s_min + 1).
    """
    from ..zipar_core.config import ZipARConfig, check_windows
    from ..zipar_core.layout import TokenLayout
    from ..zipar_core.modes import count_passes

    check_windows(cols, windows=windows)
    layout = TokenLayout(rows, cols, prefix=1, eol=eol)
    ntp = count_passes(layout, ZipARConfig(mode="ntp"))
    windows = windows or [w for w in (4, 8, 12, 16) if w < cols] or [max(1, cols // 2)]
    lines = [f"| {rows}x{cols}{' + EOL' if eol else ''} | passes | row 0 first (paper) | of NTP |",
             "|---|---:|---:|---:|", f"| ntp | {ntp} | {ntp} | 100% |"]
    if eol:
        lines.append(f"| raster with EOL passes (model's own generate) | {rows * (cols + 1)} | | |")
    for s in windows:
        fixed = [count_passes(layout, ZipARConfig(mode="fixed", window=s, paper_first_row=p)) for p in (False, True)]
        lines.append(f"| fixed s={s} | {fixed[0]} | {fixed[1]} | {_share(fixed[0] / ntp)} |")
    for s in windows:
        if s < cols:
            low = [(rows - 1) * (s + 1) + cols, 2 * cols + (rows - 2) * (s + 1)]
            lines.append(f"| adaptive s_min={s} | >= {low[0]} | >= {low[1]} | >= {_share(low[0] / ntp)} |")
    return "\n".join(lines)


def _share(ratio: float) -> str:
    return f"{ratio:.0%}" if ratio >= 0.01 else f"{ratio:.2%}"


def add_parser(sub) -> None:
    p = sub.add_parser("steps", help="forward passes of every decoding mode for a token grid")
    p.add_argument("--rows", type=positive_int, default=24, help="token rows of the grid")
    p.add_argument("--cols", type=positive_int, default=24, help="token columns of the grid")
    p.add_argument("--eol", action="store_true", help="the model feeds an end-of-row token (Lumina, Emu3)")
    p.add_argument("--windows", type=positive_int, nargs="*", help="windows to list (default: a few)")
    p.set_defaults(func=run)


def run(args) -> None:
    print(steps_table(args.rows, args.cols, args.eol, args.windows))

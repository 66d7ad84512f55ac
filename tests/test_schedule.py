"""Pass counts of the schedule: paper eq. 1, the authors' first-row variant, non-square grids."""
import pytest
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.layout import EOL, TokenLayout
from zipar.zipar_core.modes import count_passes
from zipar.zipar_core.schedule import DRAFT, FINAL, NONE, RowSchedule


def Schedule(layout, config):
    """The row schedule of a config (what modes.raster runs)."""
    config = ZipARConfig(**{"mode": "fixed", "window": layout.cols, **config.chosen()})
    return RowSchedule(layout, config.window_for(layout.cols), config.paper_first_row, config.mode == "adaptive")


def simulate_passes(layout, config):
    """The schedule run pass by pass, prefill included (what the sampler does)."""
    s = Schedule(layout, config)
    s.start_prefill()
    passes = 1
    while not s.done():
        s.commit(s.plan())
        passes += 1
    return passes


def passes(rows, cols, eol=False, **cfg):
    return simulate_passes(TokenLayout(rows, cols, prefix=1, eol=eol), ZipARConfig(**cfg))


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("paper_first_row", [False, True])
def test_the_closed_form_counts_what_the_schedule_runs(eol, paper_first_row):
    for rows in (1, 2, 3, 7):
        for cols in (1, 2, 5, 8):
            for cfg in [dict(mode="ntp")] + [dict(mode="fixed", window=s) for s in range(1, cols + 1)]:
                layout, config = TokenLayout(rows, cols, prefix=2, eol=eol), ZipARConfig(**cfg, paper_first_row=paper_first_row)
                assert count_passes(layout, config) == simulate_passes(layout, config), (rows, cols, eol, cfg)


def test_counting_a_huge_grid_runs_no_schedule(monkeypatch):
    """zipar steps --rows 1000 --cols 1000 ran for over ten minutes (issue 20): the count needs no schedule run."""
    from zipar.zipar_core import schedule

    monkeypatch.setattr(schedule, "RowSchedule", None)  # any pass-by-pass run would fail
    assert count_passes(TokenLayout(1000, 1000, prefix=1), ZipARConfig(mode="fixed", window=8)) == 999 * 8 + 1000
    assert count_passes(TokenLayout(1000, 1000, prefix=1), ZipARConfig(mode="ntp")) == 10**6


@pytest.mark.parametrize("rows,cols", [(24, 24), (32, 32), (5, 9), (9, 5), (1, 7), (7, 1)])
@pytest.mark.parametrize("eol", [False, True])
def test_fixed_window_passes_follow_eq1(rows, cols, eol):
    for s in range(1, cols + 1):
        assert passes(rows, cols, eol, window=s) == (rows - 1) * s + cols


@pytest.mark.parametrize("rows,cols,windows,expected", [
    (24, 24, [16, 12, 8], [400, 312, 224]),  # paper Table 1, LlamaGen 384px
    (32, 32, [16, 12, 8, 4], [544, 424, 304, 184]),  # paper, LlamaGen-XL 512px
])
def test_paper_first_row_reproduces_paper_tables(rows, cols, windows, expected):
    assert [passes(rows, cols, window=s, paper_first_row=True) for s in windows] == expected
    assert [passes(rows, cols, window=s, paper_first_row=True) for s in windows] == \
        [2 * cols + (rows - 2) * s for s in windows]


def test_ntp_is_one_token_per_pass():
    assert passes(24, 24, mode="ntp") == 576
    assert passes(48, 48, eol=True, mode="ntp") == 48 * 48  # the EOL is fed with the row's last token
    assert passes(6, 10, window=10) == 60


def test_window_larger_than_grid_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"window 30 is larger than the grid width \(24 tokens\).*1\.\.24"):
        passes(24, 24, window=30)
    with pytest.raises(ValueError, match="window must be a whole number >= 1"):
        ZipARConfig(window=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        ZipARConfig(mode="jacobi")


def test_every_decoded_token_is_fed_once_at_its_slot():
    layout = TokenLayout(6, 7, prefix=2)
    s = Schedule(layout, ZipARConfig(window=3))
    s.start_prefill()
    fed, placeholders = [], []
    while not s.done():
        plan = s.plan()
        for f in plan.feeds:
            if f.source != EOL and layout.slot(*f.source) == f.slot:
                fed.append(f.slot)
            else:
                placeholders.append(f.slot)
        s.commit(plan)
    all_but_last = [layout.slot(r, c) for r in range(6) for c in range(7)][:-1]
    assert sorted(fed) == all_but_last  # real tokens: each slot exactly once
    assert placeholders == [layout.slot(r, 6) for r in range(5)]  # one placeholder per row start


def test_rows_trail_by_the_window_and_placeholders_use_the_nearest_decoded_token():
    layout = TokenLayout(4, 8, prefix=1)
    s = Schedule(layout, ZipARConfig(window=3))
    s.start_prefill()
    for _ in range(2):  # prefill gave x[0, 0]; two passes give x[0, 1], x[0, 2]
        s.commit(s.plan())
    plan = s.plan()  # row 0 has 3 tokens: row 1 starts from a placeholder at x[0, 7]
    start = [f for f in plan.feeds if f.target == (1, 0)][0]
    assert start.slot == layout.slot(0, 7) and start.source == (0, 2) and start.use == FINAL


def test_adaptive_drafts_then_verifies_until_accepted():
    layout = TokenLayout(3, 6, prefix=1)
    s = Schedule(layout, ZipARConfig(mode="adaptive", window=2))
    s.start_prefill()
    s.commit(s.plan())
    plan = s.plan()
    assert [f.use for f in plan.feeds if f.target == (1, 0)] == [DRAFT]
    s.commit(plan)
    uses = []
    for _ in range(3):  # rejected three times: row 1 stays at 0 tokens, row 0 goes on
        plan = s.plan()
        uses += [f.use for f in plan.feeds if f.target == (1, 0)]
        s.commit(plan, accepted=False)
    assert uses == ["verify"] * 3 and s.decoded[1] == 0 and s.decoded[0] == 6
    plan = s.plan()  # row 0 is complete: this verification is final, accepted or not
    assert [f.final for f in plan.feeds if f.target == (1, 0)] == [True]
    s.commit(plan, accepted=False)
    assert s.decoded[1] == 1 and s.pending_row is None
    assert all(f.use in (FINAL, NONE, DRAFT) for f in s.plan().feeds)

"""The speed benchmark: its baseline is the same decoding as NTP, and it reports what it claims to.

No timing is asserted here (timings are measured by running the benchmark, not by tests); these tests
check that the numbers it prints are computed from the right runs.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ToyAR
from zipar.cli import main
from zipar.zipar_core import ZipARConfig, count_passes, generate
from zipar.zipar_core.benchmark import default_configs, format_summary, format_table, plain_raster_loop, run_configs

ROWS, COLS = 4, 6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model():
    return ToyAR()


@pytest.mark.parametrize("eol", [False, True])
def test_plain_loop_is_ntp_decoding(model, eol):
    """The baseline computes what NTP computes (greedy tokens equal), one token per pass; with end-of-row
    tokens it spends one more pass per row boundary (as a model's own generate does, and NTP does not)."""
    cond = model.prepare([1, 3], ROWS, COLS, eol=eol, guidance=True)
    config = ZipARConfig(mode="ntp", temperature=0, guidance_scale=2.5)
    codes, passes = plain_raster_loop(model, cond, config)
    ours = generate(model, cond, config)
    assert torch.equal(codes, ours.codes) and len(set(codes.flatten().tolist())) > 3
    assert passes == ROWS * COLS + (ROWS - 1 if eol else 0)
    assert ours.stats.passes == ROWS * COLS


def test_run_configs_reports_each_configuration(model):
    cond = model.prepare([2], ROWS, COLS, guidance=True)
    with pytest.raises(ValueError, match=r"windows 8: wider than the grid \(6 tokens\); give windows 1..6"):
        default_configs(COLS, windows=(2, 4, 8), adaptive=(2,))  # refused, not left out (issue 20)
    configs = default_configs(COLS, windows=(2, 4), adaptive=(2,), guidance_scale=2.0)
    assert list(configs) == ["ntp", "fixed s=2", "fixed s=4", "adaptive s_min=2"]
    results = run_configs(model, cond, configs, reps=2)
    rows = {r["name"]: r for r in results}
    assert list(rows) == ["plain KV-cached loop", *configs]
    for name, cfg in configs.items():
        if cfg.mode != "adaptive":
            assert rows[name]["passes"] == count_passes(cond.layout, cfg)
    ntp = rows["ntp"]
    assert ntp["pass_ratio"] == ntp["latency_ratio"] == ntp["efficiency"] == 1.0
    for r in results:
        assert r["sec_per_image_min"] <= r["sec_per_image_median"] <= r["sec_per_image_max"]
        assert r["pass_ratio"] == pytest.approx(ntp["passes"] / r["passes"])
        assert r["efficiency"] == pytest.approx(r["latency_ratio"] / r["pass_ratio"])
        assert r["peak_memory_mb"] > 0
        if r["name"] != "plain KV-cached loop":  # the sampler's share is measured around model.forward
            assert 0 < r["model_sec_per_image"] < r["sec_per_image_median"] + 1e-3
    assert rows["fixed s=2"]["passes"] == (ROWS - 1) * 2 + COLS
    table = format_table("toy", results)
    assert table.count("\n| ") == len(results) + 1 and "| fixed s=2 | 12 |" in table
    summary = format_summary([{"title": "toy", "results": results}])
    assert "| toy |" in summary and "s_min=2:" in summary


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--grid", "4", "--windows", "2", "--adaptive", "2", "--reps", "1",
                 "--json", str(out)]) in (0, None)
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["plain KV-cached loop", "ntp", "fixed s=2", "adaptive s_min=2"]
    assert data["results"][2]["passes"] == 3 * 2 + 4 and "| fixed s=2 | 10 |" in printed


def test_matrix_script_summarizes_a_run(model, tmp_path):
    cond = model.prepare([2], ROWS, COLS, guidance=True)
    results = run_configs(model, cond, default_configs(COLS, (2,), (2,), guidance_scale=2.0), reps=1)
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"machine": "test", "torch": torch.__version__, "dtype": "float32",
                                "cases": [{"title": "toy 4x6", "results": results}]}))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run_matrix.py"), "--summarize",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "**toy 4x6**" in run.stdout and "| toy 4x6 | " in run.stdout


def test_alternate_reverses_the_order_every_other_repetition(model, monkeypatch):
    import zipar.zipar_core.benchmark as bench

    order = []
    monkeypatch.setattr(bench, "plain_raster_loop", lambda *a, **k: (order.append("plain"), (None, 24))[1])
    monkeypatch.setattr(bench, "_zipar_run", lambda m, c, cfg, *a, **k: (order.append(cfg.mode), (0.0, None, 24))[1])
    cond = model.prepare([2], ROWS, COLS)
    configs = {"ntp": ZipARConfig(mode="ntp"), "fixed s=2": ZipARConfig(window=2)}
    run_configs(model, cond, configs, reps=3, alternate=True)
    warmup, reps = order[:3], [order[3:6], order[6:9], order[9:]]
    assert warmup == reps[0] == reps[2] == ["plain", "ntp", "fixed"] and reps[1] == ["fixed", "ntp", "plain"]
    order.clear()
    run_configs(model, cond, configs, reps=2)
    assert order[3:6] == order[6:] == ["plain", "ntp", "fixed"]  # default: the same order every repetition

"""benchmarks/sjd_side_by_side.py: its pure helpers, without the SJD authors' checkout. The real comparison
(their sampler against ours on the demo model) runs only when ZIPAR_SJD_PATH names a checkout and
transformers 4.x is installed (their code needs it); it checks what the benchmark reports, not timings."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("sjd_side_by_side", os.path.join(ROOT, "benchmarks", "sjd_side_by_side.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_no_checkout_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.resolve_checkout(None, environ={})
    assert "--sjd-path" in str(e.value) and "ZIPAR_SJD_PATH" in str(e.value)
    with pytest.raises(SystemExit) as e:  # a folder that is not their checkout: names what is missing
        bench.resolve_checkout(str(tmp_path), environ={})
    assert "llamagen/llamagen_solver.py" in str(e.value) and str(tmp_path) in str(e.value)


def test_checkout_from_flag_or_environment(tmp_path):
    for f in bench.SJD_FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert bench.resolve_checkout(str(tmp_path), environ={}) == str(tmp_path)
    assert bench.resolve_checkout(None, environ={"ZIPAR_SJD_PATH": str(tmp_path)}) == str(tmp_path)
    with pytest.raises(SystemExit):  # the flag wins over the environment
        bench.resolve_checkout(str(tmp_path / "nowhere"), environ={"ZIPAR_SJD_PATH": str(tmp_path)})


def test_interleaving_alternates_the_order():
    v = bench.VARIANTS
    assert bench.variant_order(0) == list(v) and bench.variant_order(1) == list(reversed(v))
    assert bench.variant_order(2) == list(v)
    assert bench.variant_order(3, ["a", "b"]) == ["b", "a"]


def test_their_interval_is_the_one_of_their_test_script():
    # test_llamagen.py: jacobi_loop_interval_r = (target_size // 16) ** 2 - max_num_new_tokens - 2
    assert bench.their_interval_r(256, 8) == 246 and bench.their_interval_r(1024, 16) == 1006


def test_summaries_and_ratios():
    s = bench.summarize([1, 2, 3, 10])
    assert (s["n"], s["mean"], s["median"], s["min"], s["max"]) == (4, 4.0, 2.5, 1.0, 10.0)
    assert bench.paired_ratio([1, 4, 9], [2, 2, 3]) == 2.0  # median of 0.5, 2, 3
    r = bench.summarize_variant([90, 110], [1.0, 3.0], [100, 100], [2.0, 2.0])
    assert r["passes_vs_theirs"]["ratio_of_means"] == 1.0
    assert r["seconds_vs_theirs"]["ratio_of_means"] == 1.0 and r["seconds_vs_theirs"]["paired_median_ratio"] == 1.0
    assert "passes_vs_theirs" not in bench.summarize_variant([1], [1.0])


def test_valid_grid():
    assert bench.valid_grid(list(range(4)), 4, 4)
    assert not bench.valid_grid([0, 1, 2], 4, 4)  # incomplete
    assert not bench.valid_grid([0, 1, 2, 4], 4, 4) and not bench.valid_grid([0, -1, 2, 3], 4, 4)


def test_histograms():
    assert bench.histogram_tv([0, 0, 1, 1], [1, 1, 0, 0], 2) == 0.0
    assert bench.histogram_tv([0, 0], [1, 1], 2) == 1.0
    assert bench.block_halves(25, 10) == (list(range(10)) + list(range(20, 25)), list(range(10, 20)))
    same = [[i % 3, (i + 1) % 3] for i in range(20)]
    h = bench.histogram_check({"theirs": same, "ours": same}, 3)
    assert h["halves"] == [10, 10] and h["cross_vs_theirs"]["ours"] == h["within"]["theirs"]


def test_table_has_one_row_per_sampler_and_draft_length():
    row = {**bench.summarize_variant([100, 102], [2.0, 2.2]), "valid": 2, "accuracy": 0.5}
    ours = {**bench.summarize_variant([80, 82], [1.5, 1.7], [100, 102], [2.0, 2.2]), "valid": 2, "accuracy": None}
    meta = {"grid": "16x16", "vocab": 512, "images": 2, "guidance_scale": 2.0, "temperature": 1.0, "top_k": 0,
            "top_p": 1.0, "threads": 1, "device": "cpu"}
    table = bench.format_table({"8": {bench.THEIRS: row, bench.OURS_RANDOM: ours}}, meta)
    lines = table.splitlines()
    assert lines[2].startswith("| L | sampler |") and len(lines) == 6
    assert lines[4].startswith(f"| 8 | {bench.THEIRS} | 101.0 |") and "| 2/2 | 0.50 |" in lines[4]
    assert f"| 8 | {bench.OURS_RANDOM} | 81.0 |" in lines[5] and "| 0.802 |" in lines[5] and lines[5].endswith("| - |")


def _real_checkout():
    path = os.environ.get("ZIPAR_SJD_PATH")
    if not path:
        pytest.skip("ZIPAR_SJD_PATH is not set (a checkout of the SJD authors' code)")
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip(f"the SJD authors' code needs transformers 4.x, not {transformers.__version__}")
    return path


def test_real_side_by_side_on_the_demo_model(tmp_path):
    """Two images per sampler at L=4: same logits, complete grids, their passes audited clean, and pass counts
    that add up (prefill included; SJD needs fewer than the 256 of NTP)."""
    path = _real_checkout()
    out = tmp_path / "r.json"
    bench.main(["--sjd-path", path, "--images", "2", "--draft-lengths", "4", "--audit", "1", "--no-accuracy",
                "--json", str(out)])
    import json

    r = json.loads(out.read_text())
    assert r["meta"]["max_abs_logit_diff"] < 1e-4
    rows = r["results"]["4"]
    for name in bench.VARIANTS:
        assert rows[name]["valid"] == 2
    assert rows[bench.OURS_NTP]["passes"]["mean"] == 256
    for name in (bench.THEIRS, bench.OURS_RANDOM, bench.OURS_SPATIAL):
        assert 64 <= rows[name]["passes"]["mean"] < 256
    audit = r["audit"]["4"][0]
    assert audit["head_is_final_token"] and audit["max_abs_logit_diff"] < 1e-3 and audit["passes_checked"] > 0

"""benchmarks/lumina2_side_by_side.py: its helpers without Alpha-VLLM's checkout, and the real comparison when
ZIPAR_LUMINA2_PATH names a checkout of Alpha-VLLM/Lumina-mGPT-2.0 (their side runs in ZIPAR_LUMINA2_PYTHON, a Python
with transformers 4.46, which their code needs)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("lumina2_side_by_side",
                                               os.path.join(ROOT, "benchmarks", "lumina2_side_by_side.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_no_checkout_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.resolve_checkout(None, environ={})
    assert "--lumina2-path" in str(e.value) and "ZIPAR_LUMINA2_PATH" in str(e.value)
    with pytest.raises(SystemExit) as e:  # a folder that is not their checkout: names what is missing
        bench.resolve_checkout(str(tmp_path), environ={})
    assert "lumina_mgpt/inference_solver.py" in str(e.value) and str(tmp_path) in str(e.value)
    for f in bench.THEIR_FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert bench.resolve_checkout(None, environ={"ZIPAR_LUMINA2_PATH": str(tmp_path)}) == str(tmp_path)


def test_the_instructions_are_the_ones_of_their_generate_script():
    from zipar.zipar_core.models.lumina2 import instruction

    for task in (None, "depth", "canny", "hed", "openpose"):  # two accounts of generate.py agree
        assert bench.instruction(task, "a cat", 512, 1024) == instruction("a cat", 512, 1024, task)
    assert bench.instruction("openpose", "x", 64, 32).startswith("Generate a dual-panel image of 64x32 where the "
                                                                  "<lower half> displays a <pose estimation map>")


def test_max_diff_sees_infinities_and_numbers():
    assert bench.max_diff([1.0, float("-inf")], [1.5, float("-inf")]) == 0.5
    assert bench.max_diff([1.0, float("-inf")], [1.0, 2.0]) == float("inf")


def test_real_side_by_side(tmp_path):
    """Their model, saved by their code, loaded by ours: prompt ids, logits, greedy codes, decode."""
    path = os.environ.get("ZIPAR_LUMINA2_PATH")
    if not path:
        pytest.skip("ZIPAR_LUMINA2_PATH is not set (a checkout of Alpha-VLLM/Lumina-mGPT-2.0)")
    if not os.environ.get("ZIPAR_LUMINA2_PYTHON"):
        pytest.skip("ZIPAR_LUMINA2_PYTHON is not set (a Python with transformers 4.46 for their code)")
    report = bench.main(["--lumina2-path", path, "--work", str(tmp_path), "--json", str(tmp_path / "r.json")])
    for name, r in report["results"].items():
        assert r["prompt_ids_equal"] and r["their_layout_ok"], name
        assert r["codes_ntp_equal"] and r["codes_fixed_window_cols_equal"], name
        assert r["max_abs_diff_cond_logits"] < 1e-4 and r["max_abs_diff_guided_logits"] < 1e-4, name
        assert r.get("max_abs_diff_uncond_logits", 0.0) < 1e-4 and r["max_abs_diff_decode"] < 1e-4, name


def test_the_readme_shows_the_recorded_run():
    """README's table is the recorded run's (docs/lumina2_side_by_side.json), and that run found everything equal."""
    import json
    import re

    with open(os.path.join(ROOT, "docs", "lumina2_side_by_side.json"), encoding="utf-8") as f:
        report = json.load(f)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"<!-- lumina2:begin -->\n(.*?)\n<!-- lumina2:end -->", f.read(), re.S)
    assert block and block.group(1) == bench.table(report["results"]), "paste bench.table(results) into README"
    assert all(r["codes_ntp_equal"] and r["codes_fixed_window_cols_equal"] and r["prompt_ids_equal"]
               for r in report["results"].values())

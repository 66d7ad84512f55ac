"""The memory plan (issue 22) without a model: the widest pass of every mode (the Jacobi bound against the schedule
itself), the published configurations (checked against a published parameter count), the refusal in each face's
words, and the README's table as ``zipar memory --table`` prints it. Weights and KV cache against loaded models:
``test_quantization.py``."""
import random
import re
from pathlib import Path

import pytest
from zipar.cli.common import flag
from zipar.zipar_core import ZipARConfig
from zipar.zipar_core.errors import SettingError
from zipar.zipar_core.layout import TokenLayout
from zipar.zipar_core.memory_plan import check, widest_pass
from zipar.zipar_core.models.plan_builders import plan_model, planner, published_table, subject_of
from zipar.zipar_core.modes import get as get_mode

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("rows, cols, window, draft", [(6, 6, 2, 3), (5, 8, 3, 4), (4, 4, 1, 6), (6, 6, 6, 4),
                                                       (3, 5, 2, 8)])
def test_the_jacobi_bound_holds_for_any_acceptance(rows, cols, window, draft, eol):
    layout = TokenLayout(rows, cols, prefix=2, eol=eol)
    for mode in ("sjd", "zipar_sjd"):
        config = ZipARConfig(mode=mode, window=window, draft_length=draft, draft_visibility="chain")
        bound = widest_pass(layout, config)  # the mode's own bound (rows visibility: test_jacobi_frontier.py)
        rng = random.Random(rows * 100 + cols + window)
        for accept in (lambda c: c.drafts, lambda c: 0, lambda c: rng.randint(0, c.drafts)):
            sched = get_mode(mode).schedule(layout, config)
            sched.start_prefill()
            widest = layout.prefix
            while not sched.done():
                plan = sched.plan()
                widest = max(widest, plan.num_queries)
                sched.commit(plan, [accept(c) for c in plan.chains])
            assert widest <= bound, (mode, widest, bound)


def test_the_widest_fixed_pass_is_the_rows_in_flight():
    layout = TokenLayout(24, 24, prefix=1)
    assert widest_pass(layout, ZipARConfig(mode="ntp")) == 1  # a row's last token is fed as the next one's start
    assert widest_pass(layout, ZipARConfig(mode="fixed", window=16)) == 2  # two rows in flight
    assert widest_pass(layout, ZipARConfig(mode="fixed", window=8)) == 4  # three rows and a placeholder's write
    assert widest_pass(layout, ZipARConfig(mode="adaptive", window=8)) == 5  # and a verification
    assert widest_pass(TokenLayout(4, 4, prefix=96), ZipARConfig(mode="fixed", window=2)) == 96  # the prefill


def test_janus_pro_1b_s_configuration_has_its_published_parameter_count():
    """2,089,232,011 parameters in DeepSeek's layout (as counted by a public project from the released checkpoint),
    of which the vision tower's attention-pooling head (12,595,200: latent, q, kv, proj, norm and its MLP at width
    1024) is dropped by the conversion to transformers' layout, as transformers' own conversion does."""
    model = subject_of("Janus-Pro-1B").transformer
    pool = 1024 + (1024 * 1024 + 1024) + (1024 * 2048 + 2048) + (1024 * 1024 + 1024) + 2 * 1024 \
        + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    assert sum(p.numel() for p in model.parameters()) == 2_089_232_011 - pool


def test_a_plan_that_does_not_fit_is_refused_with_what_fits_in_each_face_s_words():
    replan = planner("Janus-Pro-7B", device="cuda")
    current = replan()
    nf4 = replan(quantization="nf4").total
    with pytest.raises(SettingError) as e:
        check(current, replan, nf4 + 1, "loading Janus-Pro-7B")
    python = str(e.value)
    assert python.startswith("loading Janus-Pro-7B needs 15.") and "on cuda: weights 13.80 GiB" in python
    assert "it would fit with quantization nf4 (5.83 GiB)" in python and "int8" not in python.split("fit with")[1]
    assert "it would fit with --quantize nf4" in e.value.render(flag)
    check(current, replan, current.total, "fits")  # exactly enough: no error
    check(current, replan, None, "unknown")  # free memory unknown: nothing refused


def test_a_batch_too_large_is_refused_with_the_largest_that_fits():
    replan = planner("LlamaGen-c2i-L-384", device="cpu", batch=64)
    current = replan()
    free = replan(batch=10).total
    with pytest.raises(SettingError, match=r"it would fit with batch_size 10 \(") as e:
        check(current, replan, free, "a batch of 64 images")
    assert "it would fit with --batch-size 10 (" in e.value.render(flag) and e.value.name == "batch_size"


def test_plans_follow_the_settings():
    base = plan_model("Lumina-mGPT-7B-768", quantization="nf4")
    assert base.grid == (48, 48) and base.window == 16 and base.guidance
    assert plan_model("Lumina-mGPT-7B-768", quantization="nf4", batch=2).kv_cache == 2 * base.kv_cache
    assert plan_model("Lumina-mGPT-7B-768", quantization="nf4", guidance_scale=1.0).kv_cache == base.kv_cache // 2
    assert plan_model("Lumina-mGPT-7B-768", quantization="nf4", height=512, width=512).kv_cache < base.kv_cache
    assert plan_model("Lumina-mGPT-7B-768").weights > 2.5 * base.weights


def test_the_readme_memory_table_is_what_zipar_memory_prints():
    block = re.search(r"<!-- memory:begin -->\n(.*?)\n<!-- memory:end -->", README.read_text(), re.S)
    assert block, "README lost its memory markers"
    some = published_table(models=["Janus-Pro-7B", "Lumina-mGPT-2.0", "LlamaGen-c2i-B-384"]).splitlines()
    assert some[0] == block.group(1).splitlines()[0]
    for line in some[2:]:
        assert line in block.group(1).splitlines(), f"{line}: run zipar memory --table and update README"

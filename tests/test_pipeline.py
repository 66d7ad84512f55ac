"""ZipARPipeline on tiny random models of every family (LlamaGen c2i and t2i, Janus-Pro, Emu3-Gen, Lumina-mGPT).

Round trips through the original formats and the diffusers format, output types, counts, determinism,
callbacks and offload, and the bad inputs that must fail before any model work.
"""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import gen, quiet, tiny_llamagen, tiny_t5
from zipar import ZipARPipeline
from zipar.pipelines import ChameleonVQGANModel, LlamaGenGPTModel, LlamaGenVQModel, ZipARPipelineOutput
from zipar.zipar_core.models.chameleon_vqgan import save_safetensors
from zipar.zipar_core.models.llamagen import LlamaGenAdapter
from zipar.zipar_core.models.tiny import tiny_chameleon, tiny_emu3, tiny_janus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- tiny models ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def c2i():
    gpt, vq = tiny_llamagen("c2i")
    return quiet(ZipARPipeline.from_adapter(LlamaGenAdapter(gpt, vq)))


@pytest.fixture(scope="module")
def janus():
    model, tok = tiny_janus()
    return quiet(ZipARPipeline(model, tokenizer=tok))


# -- loading and the diffusers format -------------------------------------------------------------------

def _save_llamagen_checkpoints(folder, model_type="c2i"):
    """LlamaGen's release format: GPT weights under "model" in a .pt named with the image size, raw VQ."""
    os.makedirs(folder, exist_ok=True)
    gpt, vq = tiny_llamagen(model_type)
    gpt_path, vq_path = os.path.join(folder, f"{model_type}_tiny_64.pt"), os.path.join(folder, "vq_ds16.pt")
    torch.save({"model": gpt.state_dict()}, gpt_path)
    torch.save({"model": vq.state_dict()}, vq_path)
    return gpt_path, vq_path


def _original(family, folder):
    """The family's original release layout in ``folder``; returns the path to give from_pretrained / the
    LlamaGen constructor, and call arguments that fit the tiny model."""
    os.makedirs(folder, exist_ok=True)
    if family == "llamagen-c2i":
        return _save_llamagen_checkpoints(folder, "c2i"), {"class_labels": [3, 7]}
    if family == "llamagen-t2i":
        gpt_path, vq_path = _save_llamagen_checkpoints(folder, "t2i")
        t5, tok = tiny_t5()
        t5.save_pretrained(os.path.join(folder, "t5"))
        tok.save_pretrained(os.path.join(folder, "t5"))
        return (gpt_path, vq_path, os.path.join(folder, "t5")), {"prompt": ["a red cat", "a dog on the mat"]}
    build = {"janus": tiny_janus, "emu3": tiny_emu3, "lumina": tiny_chameleon}[family]
    model, tok = build()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    args = {"prompt": ["a cat", "a red dog on the mat"]}
    if family == "emu3":
        args.update(height=32, width=32)
    if family == "lumina":
        torch.manual_seed(2)
        save_safetensors(ChameleonVQGANModel(n_embed=32, embed_dim=8, z_channels=32, ch=32, ch_mult=[1, 1, 1, 1, 1],
                                             num_res_blocks=1).model, os.path.join(folder, "vqgan.safetensors"))
        args.update(height=64, width=64)
    return folder, args


def _load(family, source, **kw):
    if family.startswith("llamagen"):
        return quiet(ZipARPipeline.from_llamagen_checkpoints(*source, n_head=4, image_size=64, **kw))
    return quiet(ZipARPipeline.from_pretrained(source, **kw))


@pytest.mark.parametrize("family", ["llamagen-c2i", "llamagen-t2i", "janus", "emu3", "lumina"])
def test_round_trip_original_diffusers_format_gives_identical_images(family, tmp_path):
    source, args = _original(family, str(tmp_path / "original"))
    pipe = _load(family, source, window=2)
    first = pipe(**args, generator=gen(0), output_type="np")
    pipe.save_pretrained(tmp_path / "zipar")
    index = json.loads((tmp_path / "zipar" / "model_index.json").read_text())
    assert index["_class_name"] == "ZipARPipeline" and index["family"] == family.split("-")[0]
    assert index["window"] == 2  # ZipAR settings live in the pipeline config
    again = quiet(ZipARPipeline.from_pretrained(tmp_path / "zipar"))
    second = again(**args, generator=gen(0), output_type="np")
    assert torch.equal(first.codes, second.codes)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.settings == second.settings and first.settings["window"] == 2
    again.save_pretrained(tmp_path / "zipar2")  # and once more: the saved folder is stable
    third = quiet(ZipARPipeline.from_pretrained(tmp_path / "zipar2"))(**args, generator=gen(0), output_type="np")
    np.testing.assert_array_equal(first.images, third.images)


def test_from_pretrained_takes_a_folder_of_llamagen_release_files(tmp_path, c2i):
    _save_llamagen_checkpoints(str(tmp_path))
    pipe = quiet(ZipARPipeline.from_pretrained(tmp_path, n_head=4, image_size=64, window=3, device="cpu"))
    assert pipe.family == "llamagen" and pipe.config.window == 3
    ref = quiet(ZipARPipeline.from_llamagen_checkpoints(*_save_llamagen_checkpoints(str(tmp_path / "b")), n_head=4,
                                                        image_size=64))
    np.testing.assert_array_equal(pipe(class_labels=[2], output_type="np", generator=gen()).images,
                                  ref(class_labels=[2], window=3, output_type="np", generator=gen()).images)


def test_components_are_diffusers_models_with_the_official_configs(c2i, tmp_path):
    assert isinstance(c2i.transformer, LlamaGenGPTModel) and isinstance(c2i.vqvae, LlamaGenVQModel)
    assert c2i.transformer.config.num_classes == 10 and c2i.transformer.model.config.num_classes == 10
    assert list(c2i.vqvae.config.ch_mult) == [1, 1, 1, 1, 1]
    c2i.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["transformer"] == [
        "zipar.pipelines.components", "LlamaGenGPTModel"]


def test_from_zipar_import_is_lazy_and_comfy_startup_never_imports_diffusers():
    import zipar

    assert zipar.ZipARPipeline is ZipARPipeline
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('zipar', sys.argv[1], "
            "submodule_search_locations=[sys.argv[2]]); m = importlib.util.module_from_spec(spec); "
            "sys.modules['zipar'] = m; spec.loader.exec_module(m); assert 'diffusers' not in sys.modules, 'diffusers'; "
            "assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "__init__.py"), ROOT], check=True)


# -- __call__ ------------------------------------------------------------------------------------------

def test_output_types_shapes_and_ranges(c2i):
    out = c2i(class_labels=[1, 2], generator=gen(), output_type="pil")
    assert isinstance(out, ZipARPipelineOutput)
    assert len(out.images) == 2 and all(isinstance(im, PIL.Image.Image) and im.size == (64, 64) for im in out.images)
    npy = c2i(class_labels=[1, 2], generator=gen(), output_type="np").images
    assert isinstance(npy, np.ndarray) and npy.shape == (2, 64, 64, 3) and npy.dtype == np.float32
    assert 0.0 <= npy.min() and npy.max() <= 1.0
    pt = c2i(class_labels=[1, 2], generator=gen(), output_type="pt").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, 64, 64) and pt.is_floating_point()
    assert 0.0 <= pt.min() and pt.max() <= 1.0
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), npy)
    np.testing.assert_array_equal(np.asarray(out.images[0]), (npy[0] * 255).round().astype(np.uint8))
    codes = c2i(class_labels=[1, 2], generator=gen(), output_type="codes")
    assert codes.images.shape == (2, 4, 4) and codes.images.dtype == torch.long
    assert 0 <= codes.images.min() and codes.images.max() < 64
    assert torch.equal(codes.images, out.codes)  # same generator: the same tokens whatever the output type
    images, raw, stats, _settings = c2i(class_labels=[1, 2], generator=gen(), output_type="pt", return_dict=False)
    assert torch.equal(images, pt) and torch.equal(raw, out.codes) and stats.passes == out.stats.passes


def test_batch_and_num_images_per_prompt_give_the_right_count(c2i, janus):
    out = c2i(class_labels=[1, 2, 3], num_images_per_prompt=2, output_type="codes", generator=gen())
    assert out.codes.shape[0] == 6 and out.stats.batch_size == 6
    assert len(c2i(class_labels=4, output_type="pil", generator=gen()).images) == 1
    out = janus(prompt=["a cat", "a red dog"], num_images_per_prompt=3, output_type="np", generator=gen())
    assert out.images.shape == (6, 64, 64, 3)
    assert len(janus(prompt="a cat", output_type="pil", generator=gen()).images) == 1
    gens = [gen(i) for i in range(4)]
    assert janus(prompt=["a cat", "a dog"], num_images_per_prompt=2, generator=gens, output_type="codes").codes.shape[0] == 4


def test_same_generator_same_images_and_per_image_generators(c2i):
    a = c2i(class_labels=[1, 2], generator=gen(5), output_type="np").images
    b = c2i(class_labels=[1, 2], generator=gen(5), output_type="np").images
    np.testing.assert_array_equal(a, b)
    c = c2i(class_labels=[1, 2], generator=gen(6), output_type="codes").codes
    assert not torch.equal(c, c2i(class_labels=[1, 2], generator=gen(5), output_type="codes").codes)
    # one generator per image: each image gets the tokens it gets alone
    both = c2i(class_labels=[1, 2], generator=[gen(10), gen(11)], output_type="codes").codes
    alone = c2i(class_labels=[2], generator=[gen(11)], output_type="codes").codes
    assert torch.equal(both[1:], alone)


def test_speed_options_reach_the_sampler_and_change_nothing(c2i, emulated_cuda_graphs):
    eager = c2i(class_labels=[1, 2], window=2, generator=[gen(1), gen(2)], output_type="codes").codes
    graphed = c2i(class_labels=[1, 2], window=2, generator=[gen(1), gen(2)], output_type="codes",
                  cuda_graphs=True).codes
    assert torch.equal(eager, graphed) and emulated_cuda_graphs  # graphs were captured and replayed


def test_modes_settings_and_stats(c2i):
    ntp = c2i(class_labels=[1], mode="ntp", output_type="codes", generator=gen())
    assert ntp.stats.passes == 16 and ntp.settings["mode"] == "ntp"
    fixed = c2i(class_labels=[1], mode="fixed", window=1, output_type="codes", generator=gen())
    assert fixed.stats.passes == 3 * 1 + 4 and fixed.stats.tokens == 16  # (H-1)*s + W
    ada = c2i(class_labels=[1], mode="adaptive", window=1, output_type="codes", generator=gen())
    assert ada.stats.passes < 16 and ada.stats.drafts_proposed >= 3
    greedy = [c2i(class_labels=[1], temperature=0, mode="ntp", output_type="codes").codes,
              c2i(class_labels=[1], temperature=0, mode="fixed", window=4, output_type="codes").codes]
    assert torch.equal(*greedy)  # window == width is raster decoding
    # family defaults (LlamaGen-B/L: cfg 2.0) and the pipeline config in between
    assert ntp.settings["guidance_scale"] == 2.0 and ntp.settings["top_k"] == 0
    c2i.register_to_config(top_k=5)
    try:
        assert c2i(class_labels=[1], output_type="codes").settings["top_k"] == 5
        assert c2i(class_labels=[1], top_k=7, output_type="codes").settings["top_k"] == 7
    finally:
        c2i.register_to_config(top_k=None)


def test_jacobi_modes_through_the_pipeline(c2i):
    """mode / draft_length / draft_init reach the sampler: the same codes as generate() with that config, the
    settings recorded, the progress bar grown to the real pass count."""
    from zipar.zipar_core import ZipARConfig, generate

    for mode, window in (("sjd", None), ("zipar_sjd", 2)):
        out = c2i(class_labels=[1, 2], mode=mode, window=window, draft_length=3, draft_init="spatial",
                  generator=[gen(1), gen(2)], output_type="codes")
        adapter = c2i.build_adapter()
        cfg = ZipARConfig(mode=mode, window=window or 4, draft_length=3, draft_init="spatial", guidance_scale=2.0)
        ref = generate(adapter, adapter.prepare(class_labels=[1, 2], guidance_scale=2.0), cfg,
                       generator=[gen(1), gen(2)])
        assert torch.equal(out.codes, ref.codes)
        assert (out.settings["mode"], out.settings["draft_length"], out.settings["draft_init"]) == (mode, 3, "spatial")
        assert out.stats.chain_steps > 0 and out.stats.mean_accepted_length >= 1


def test_callback_progress_and_interrupt(c2i):
    seen = []

    def on_step(pipe, step, timestep, kwargs):
        assert pipe is c2i and set(kwargs) == {"codes"}
        seen.append((step, int((kwargs["codes"] >= 0).sum())))
        return kwargs

    out = c2i(class_labels=[1, 2], window=2, callback_on_step_end=on_step, output_type="codes", generator=gen())
    assert [s for s, _ in seen] == list(range(out.stats.passes))
    assert seen[0][1] == 2 and seen[-1][1] == 32  # x[0,0] of each image after prefill; all tokens at the end
    assert all(a <= b for (_, a), (_, b) in itertools.pairwise(seen))

    updates, bars = [], []
    c2i.set_progress_bar_config(disable=True)
    original = c2i.progress_bar

    def spy(total=None, iterable=None):
        bar = original(total=total)
        bar_update = bar.update
        bar.update = lambda n=1: (updates.append(n), bar_update(n))
        updates.append(("total", total))
        bars.append(bar)
        return bar

    c2i.progress_bar = spy
    try:
        out = c2i(class_labels=[1], window=2, output_type="codes", generator=gen())
        assert updates[0] == ("total", out.stats.passes) and len(updates) - 1 == out.stats.passes
        # adaptive: the bar starts at the all-accepted count (fixed window s_min + 1) and grows per rejection
        adaptive = c2i(class_labels=[1], mode="adaptive", window=1, temperature=1.0, output_type="codes",
                       generator=gen())
    finally:
        del c2i.progress_bar
    assert updates[len(updates) - adaptive.stats.passes - 1] == ("total", 4 + 3 * 2)  # (H-1)(s+1) + W, 4x4
    assert adaptive.stats.passes > 4 + 3 * 2  # some drafts were rejected ...
    assert bars[-1].total == adaptive.stats.passes == updates[-adaptive.stats.passes:].count(1)  # ... the bar grew

    def stop(pipe, step, timestep, kwargs):
        if step == 2:
            pipe._interrupt = True
        return kwargs

    # diffusers' convention: an interrupted call returns what it has (issue 20), flagged in its stats
    out = c2i(class_labels=[1], window=2, callback_on_step_end=stop, output_type="pt", generator=gen())
    full = c2i(class_labels=[1], window=2, output_type="pt", generator=gen())  # the next call runs again
    assert out.stats.stopped and out.stats.passes == 4 and not full.stats.stopped
    decoded = out.codes >= 0
    assert 0 < int(decoded.sum()) < 16 and torch.equal(out.codes[decoded], full.codes[decoded])
    pixels = decoded[0].repeat_interleave(16, 0).repeat_interleave(16, 1)  # 16 px per token
    assert (out.images[0][:, ~pixels] == 0.5).all() and (out.images[0][:, pixels] != 0.5).any()  # undecoded: grey


def test_model_cpu_offload_runs_components_in_sequence(tmp_path):
    source, args = _original("llamagen-t2i", str(tmp_path))
    pipe = _load("llamagen-t2i", source)
    ref = pipe(**args, generator=gen(), output_type="np").images
    pipe.enable_model_cpu_offload(device="cpu")
    order = []

    def recording(hook, name):
        def pre_forward(module, *args, **kwargs):
            order.append(name)
            return type(hook).pre_forward(hook, module, *args, **kwargs)
        return pre_forward

    for name in ("text_encoder", "transformer", "vqvae"):
        hook = getattr(pipe, name)._hf_hook
        hook.pre_forward = recording(hook, name)
    out = pipe(**args, generator=gen(), output_type="np").images
    np.testing.assert_array_equal(ref, out)
    # the text encoder runs inside prepare(); the transformer is onloaded again after it, which offloads T5
    assert order == ["transformer", "text_encoder", "transformer", "vqvae"]
    with pytest.raises(NotImplementedError, match="enable_model_cpu_offload"):
        pipe.enable_sequential_cpu_offload()


def test_torch_dtype_and_to(tmp_path, c2i):
    c2i.save_pretrained(tmp_path)
    half = quiet(ZipARPipeline.from_pretrained(tmp_path, dtype=torch.bfloat16))
    assert half.transformer.dtype == torch.bfloat16
    out = half.to("cpu")(class_labels=[1], output_type="np", generator=gen())
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()


def test_callback_returned_codes_are_honoured(c2i):
    """A callback may rewrite the tokens the pass just sampled (the next pass feeds them); the final image and
    every later pass see the rewrite. Rewriting a token the model has already read is refused."""
    forced = []

    def force_zero(pipe, step, timestep, kwargs):
        codes = kwargs["codes"].clone()
        new = (codes >= 0) & ~(before[0] >= 0) if before else codes >= 0  # sampled in this pass
        forced.append(new.clone())
        before[:] = [codes.clone()]
        codes[new] = 5
        return {"codes": codes}

    before = []
    out = c2i(class_labels=[1, 2], window=2, callback_on_step_end=force_zero, output_type="codes", generator=gen())
    assert (out.codes == 5).all() and sum(int(f.sum()) for f in forced) == out.codes.numel()

    def rewrite_old(pipe, step, timestep, kwargs):
        codes = kwargs["codes"].clone()
        if step == 3:
            codes[0, 0, 0] = (codes[0, 0, 0] + 1) % 64
        return {"codes": codes}

    with pytest.raises(ValueError, match="row 0, column 0, which the model has already read"):
        c2i(class_labels=[1], window=2, callback_on_step_end=rewrite_old, output_type="codes", generator=gen())


def test_precomputed_conditioning_and_the_old_window_name(c2i):
    cond = c2i.encode_prompt(class_labels=[1, 2], num_images_per_prompt=2)
    assert cond.batch_size == 4 and cond.guidance  # the registry's guidance 2.0 for this c2i model
    gens = [gen(i) for i in range(4)]
    a = c2i(conditioning=cond, window=2, generator=gens, output_type="codes").codes
    b = c2i(class_labels=[1, 2], num_images_per_prompt=2, window=2, generator=[gen(i) for i in range(4)],
            output_type="codes").codes
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="either conditioning or prompt"):
        c2i(conditioning=cond, class_labels=[1])
    with pytest.warns(FutureWarning, match="window_size.*use `window`"):
        old = c2i(class_labels=[1], window_size=2, generator=gen(), output_type="codes")
    assert old.settings["window"] == 2


# -- bad input: clear errors before any model work -------------------------------------------------------

@pytest.fixture
def no_model_work(monkeypatch):
    """Counts forward calls of every torch module while the test runs."""
    calls = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: calls.append(type(m).__name__))
    yield calls
    handle.remove()


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": "a cat", "class_labels": [1]}, "either prompt.*or class_labels"),
    ({"prompt": "a cat"}, "class-conditional: pass class_labels"),
    ({"class_labels": [1, 10]}, r"class label\(s\) \[10\] out of range.*0\.\.9"),
    ({"class_labels": [-1]}, "out of range"),
    ({}, "pass class_labels"),
    ({"class_labels": [1], "negative_prompt": "bad"}, "negative_prompt"),
    ({"class_labels": [1], "height": 72, "width": 64}, "height 72 is not a positive multiple of 16"),
    ({"class_labels": [1], "height": 128, "width": 128}, "larger than the 4x4"),
    ({"class_labels": [1], "window": 5}, "window 5 is larger than the grid width"),
    ({"class_labels": [1], "mode": "speculative"}, "mode must be one of"),
    ({"class_labels": [1], "output_type": "jpeg"}, "output_type"),
    ({"class_labels": [1, 2], "generator": [torch.Generator()]}, "1 generators for 2 images"),
    ({"class_labels": [1], "num_images_per_prompt": 0}, "num_images_per_prompt"),
])
def test_bad_call_arguments_fail_before_model_work(c2i, no_model_work, kwargs, match):
    with pytest.raises(ValueError, match=match):
        c2i(**kwargs)
    assert no_model_work == []


@pytest.mark.parametrize("kwargs, match", [
    ({"class_labels": [1]}, "text-to-image: pass prompt"),
    ({"prompt": "a cat", "height": 512, "width": 512}, "384x384|64x64"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "3 negative prompts for 2 prompts"),
    ({"prompt": []}, "non-empty list"),
])
def test_bad_text_arguments_fail_before_model_work(janus, no_model_work, kwargs, match):
    with pytest.raises(ValueError, match=match):
        janus(**kwargs)
    assert no_model_work == []


def test_unsupported_lumina_size_names_the_supported_ones(tmp_path, no_model_work):
    model, tok = tiny_chameleon()
    pipe = ZipARPipeline(model, tokenizer=tok, target_size=512)
    no_model_work.clear()
    with pytest.raises(ValueError, match="not trained for 500x512|multiples of 32"):
        pipe(prompt="a cat", height=512, width=500)
    with pytest.raises(ValueError, match="Lumina-mGPT-512 was not trained for 1024x1024"):
        pipe(prompt="a cat", height=1024, width=1024)
    assert no_model_work == []


def test_unknown_family(tmp_path, c2i):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unsupported model type 'gpt2'"):
        ZipARPipeline.from_pretrained(tmp_path / "gpt2")
    c2i.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    (tmp_path / "saved" / "model_index.json").write_text(json.dumps({**index, "family": "dalle"}))
    with pytest.raises(ValueError, match="unknown model family 'dalle'"):
        ZipARPipeline.from_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="unknown model family"):
        ZipARPipeline(torch.nn.Linear(2, 2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a transformers model folder"):
        ZipARPipeline.from_pretrained(tmp_path / "empty")


def test_missing_component_files(tmp_path, c2i):
    c2i.save_pretrained(tmp_path / "a")
    os.remove(tmp_path / "a" / "vqvae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="'vqvae'.*no weight file"):
        ZipARPipeline.from_pretrained(tmp_path / "a")
    c2i.save_pretrained(tmp_path / "b")
    os.remove(tmp_path / "b" / "transformer" / "config.json")
    with pytest.raises(FileNotFoundError, match="'transformer'.*no config.json"):
        ZipARPipeline.from_pretrained(tmp_path / "b")
    gpt_path, vq_path = _save_llamagen_checkpoints(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="VQ checkpoint not found"):
        ZipARPipeline.from_llamagen_checkpoints(gpt_path, str(tmp_path / "nope.pt"), n_head=4)
    with pytest.raises(FileNotFoundError, match="FLAN-T5 folder not found"):
        ZipARPipeline.from_llamagen_checkpoints(gpt_path, vq_path, str(tmp_path / "t5"), n_head=4)
    with pytest.raises(ValueError, match="from_llamagen_checkpoints"):
        ZipARPipeline.from_pretrained(gpt_path)
    with pytest.raises(TypeError, match="unexpected argument"):
        ZipARPipeline.from_llamagen_checkpoints(gpt_path, vq_path, n_head=4, image_size=64, windw=3)


def test_every_argument_of_call_is_in_the_readme_table():
    import inspect

    from zipar.pipelines.settings import call_arguments

    listed = {name for names, _ in call_arguments() for name in names}
    params = set(inspect.signature(ZipARPipeline.__call__).parameters) - {"self", "kwargs"}
    assert params == listed

"""Quantized weights (issue 22): every family's tiny model and the demo model in nf4, fp4 and int8 through
bitsandbytes on this CPU; greedy ZipAR and Jacobi decoding give the quantized model's own NTP tokens; the memory
plan's weights and KV cache are the bytes the loaded model holds and allocates; folders saved quantized load as
saved; every face takes the setting (and the ecosystem's objects) and refuses bad input in one line before any
weight loads."""
import json
import os
import sys
import types
import warnings

import pytest
import torch
from zipar import ZipARPipeline
from zipar.cli import main
from zipar.zipar_core import ZipARConfig, generate
from zipar.zipar_core.errors import SettingError
from zipar.zipar_core.models import load_model, registry
from zipar.zipar_core.models.plan_builders import plan_adapter
from zipar.zipar_core.models.tiny import tiny_llamagen_parts
from zipar.zipar_core.quantization import METHODS, Quantization, is_quantized, parse, resident_bytes

warnings.filterwarnings("ignore", message="MatMul8bitLt")  # LLM.int8() computes in float16: said once per call
REQUESTS = {"llamagen": {"class_labels": [3]}, "janus": {"prompt": ["photo of a dog"]},
            "emu3": {"prompt": ["photo of a dog"], "height": 32, "width": 40},
            "lumina": {"prompt": ["photo of a dog"], "height": 64, "width": 64},
            "lumina2": {"prompt": ["photo of a dog"], "height": 32, "width": 32}}
SCALE = 2.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each family's tiny model saved once, in the layout its loader reads (LlamaGen: release files)."""
    out = {}
    for name in registry.FAMILIES:
        folder = tmp_path_factory.mktemp(name)
        if name == "llamagen":
            gpt, vq = tiny_llamagen_parts()
            torch.save({"model": gpt.state_dict()}, folder / "c2i_B_64.pt")
            torch.save({"model": vq.state_dict()}, folder / "vq_ds16_c2i.pt")
            out[name] = str(folder / "c2i_B_64.pt")
        else:
            registry.build_tiny(name).save_pretrained(str(folder))
            out[name] = str(folder)
    return out


LOADED = {}


def loaded(folders, family, method):
    """The family's tiny model loaded through load_model with ``quantization=method`` (cached for the module)."""
    key = (family, method)
    if key not in LOADED:
        extra = {"n_head": 4, "image_size": 64} if family == "llamagen" else {}
        LOADED[key] = load_model(folders[family], quantization=method, device="cpu", dtype=torch.float32, **extra)
        if family == "lumina2":
            LOADED[key].target_size = None  # a tiny model has no training sizes (tiny_lumina2_adapter's setting)
    return LOADED[key]


def greedy(adapter, mode, window=None):
    cond = adapter.prepare(**REQUESTS[adapter.family], guidance_scale=SCALE)
    cols = cond.layout.cols
    cfg = ZipARConfig(mode=mode, window=window or cols, draft_length=3, temperature=0, guidance_scale=SCALE)
    return generate(adapter, cond, cfg)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_every_family_quantized_greedy_zipar_and_jacobi_give_its_own_ntp_tokens(folders, family, method):
    adapter = loaded(folders, family, method)
    assert is_quantized(adapter.components()[0]["transformer"])
    ntp = greedy(adapter, "ntp")
    assert len(ntp.codes.unique()) > 2  # varied argmaxes: equality means something
    for mode in ("fixed", "sjd"):
        out = greedy(adapter, mode)
        assert torch.equal(out.codes, ntp.codes), (family, method, mode)


@pytest.mark.parametrize("method", [None, *METHODS])
@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_the_plan_counts_the_weights_and_the_cache_a_loaded_model_holds(folders, family, method):
    """The weights from the modules' shapes and bitsandbytes' layout equal every byte the loaded model holds
    (statistics included); the KV term equals the cache the adapter allocates for the batch."""
    adapter = loaded(folders, family, method)
    modules = [m for m in adapter.components()[0].values() if isinstance(m, torch.nn.Module)]
    two = {k: v * 2 if isinstance(v, list) else v for k, v in REQUESTS[family].items()}
    plan = plan_adapter(adapter, adapter.check(**two), ZipARConfig(mode="fixed", window=2, guidance_scale=SCALE),
                        batch=2, device="cpu")
    assert plan.weights == sum(resident_bytes(m) for m in modules), plan.weight_parts
    assert (plan.weight_parts["transformer, quantized layers"] > 0) == (method is not None) == \
        (plan.quantization == method)
    cond = adapter.prepare(**two, guidance_scale=SCALE)
    cache = adapter.new_cache(cond, cond.layout.num_slots + 1)
    assert plan.kv_cache == sum(t.numel() * t.element_size() for t in (*cache.keys, *cache.values))


def test_the_demo_model_quantized_keeps_exactness():
    from zipar.demo_model import load_demo_model

    for method in METHODS:
        adapter = load_demo_model(quantization=method)
        cond = adapter.prepare(class_labels=[4], rows=6, cols=16, guidance_scale=1.0)
        ntp = generate(adapter, cond, ZipARConfig(mode="ntp", temperature=0))
        for cfg in (ZipARConfig(mode="fixed", window=cond.layout.cols, temperature=0),
                    ZipARConfig(mode="sjd", draft_length=8, temperature=0)):
            assert torch.equal(generate(adapter, cond, cfg).codes, ntp.codes), (method, cfg.mode)


# -- the setting, in every form the faces take ------------------------------------------------------

def test_the_setting_comes_from_a_string_or_the_ecosystem_s_own_objects():
    from diffusers import PipelineQuantizationConfig
    from transformers import BitsAndBytesConfig

    assert parse(None) is None and parse("none") is None and parse(" NF4 ") == Quantization("nf4")
    q = parse(BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.bfloat16,
                                 llm_int8_skip_modules=["extra"]))
    assert (q.method, q.compute_dtype, q.double_quant, q.skip) == ("fp4", "bfloat16", False, ("extra",))
    assert parse(BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=0.0)) == Quantization("int8", threshold=0.0)
    pipeline = PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit",
                                          quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
                                          components_to_quantize=["transformer"])
    assert parse(pipeline).method == "nf4" and parse(pipeline).compute_dtype is None
    mapped = PipelineQuantizationConfig(quant_mapping={"transformer": BitsAndBytesConfig(load_in_8bit=True)})
    assert parse(mapped).method == "int8"
    for bad, said in (("q5", "quantization must be one of none, nf4, fp4, int8; got 'q5'"),
                      (3, "got a int"),
                      (PipelineQuantizationConfig(quant_mapping={"vqvae": BitsAndBytesConfig(load_in_8bit=True)}),
                       "quantizes the transformer component only"),
                      (BitsAndBytesConfig(), "neither load_in_4bit nor load_in_8bit")):
        with pytest.raises(SettingError, match=said.replace("(", r"\(").replace(")", r"\)")):
            parse(bad)


@pytest.fixture
def no_bitsandbytes(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a weight file is read."""
    from zipar.zipar_core import checkpoints

    def refuse(*a, **k):
        raise AssertionError("weights were read before the quantization was checked")
    monkeypatch.setattr(checkpoints, "load_file", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)


def _one_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_bad_quantization_is_one_line_in_each_face_before_any_weight(folders, no_weights, capsys):
    from zipar.nodes.loader import BUILTIN_DEMO, ModelLoadError, ZipARModelLoader

    with pytest.raises(SettingError, match="quantization must be one of none, nf4, fp4, int8; got 'q5'"):
        load_model(folders["janus"], quantization="q5")
    with pytest.raises(SettingError, match="quantization_config must be one of"):
        ZipARPipeline.from_pretrained(folders["janus"], quantization_config="q5")
    with pytest.raises(SystemExit):
        main(["generate", "--model", "demo", "--class-label", "1", "--quantize", "q5"])
    assert "--quantize: invalid choice: 'q5'" in _one_line(capsys.readouterr().err)
    with pytest.raises(ModelLoadError, match="quantization must be one of"):
        ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "q5")


def test_missing_bitsandbytes_is_one_line_in_each_face_before_any_weight(folders, no_bitsandbytes, no_weights,
                                                                        tmp_path, capsys):
    from zipar.nodes.loader import BUILTIN_DEMO, ModelLoadError, ZipARModelLoader

    for path in (folders["janus"], folders["llamagen"]):
        with pytest.raises(SettingError, match="quantization needs bitsandbytes, which is not installed: pip install"):
            load_model(path, quantization="nf4", n_head=4, image_size=64) if path.endswith(".pt") else \
                load_model(path, quantization="nf4")
    with pytest.raises(SettingError, match="quantization needs bitsandbytes"):
        ZipARPipeline.from_pretrained(folders["janus"], quantization="int8")
    assert main(["generate", "--model", "demo", "--class-label", "1", "--quantize", "nf4", "-o",
                 str(tmp_path / "x.png")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--quantize needs bitsandbytes, which is not installed" in line and "leave --quantize unset" in line
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ModelLoadError, match="quantization needs bitsandbytes") as e:
        ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "nf4")
    assert "Fix: set quantization" in str(e.value)


def test_a_quantization_that_cannot_apply_is_refused_before_any_weight(folders, tmp_path, capsys):
    with pytest.raises(SettingError, match="runs on CUDA and the CPU .* on mps"):
        load_model(folders["janus"], quantization="nf4", device="mps")
    assert main(["generate", "--model", folders["janus"], "--prompt", "a cat", "--quantize", "int8", "--device", "mps",
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "--quantize runs on CUDA and the CPU" in _one_line(capsys.readouterr().err)
    saved = tmp_path / "janus-int8"
    loaded(folders, "janus", "int8").save_pretrained(str(saved))
    with pytest.raises(SettingError, match="quantization='nf4' cannot apply: .* is saved quantized as int8"):
        load_model(str(saved), quantization="nf4")


# -- folders saved quantized ------------------------------------------------------------------------

@pytest.mark.parametrize("family, method", [("janus", "nf4"), ("lumina2", "int8"), ("llamagen", "nf4"),
                                            ("llamagen", "int8")])
def test_folders_saved_quantized_load_as_saved(folders, tmp_path, family, method):
    """transformers' save_pretrained of a bitsandbytes model (Lumina-mGPT 2.0 through its own loader), and
    LlamaGen's safetensors with the packed layers: the same bytes and the same tokens, nothing quantized again."""
    adapter = loaded(folders, family, method)
    names = {"gpt_name": "c2i_B_64"} if family == "llamagen" else {}
    adapter.save_pretrained(str(tmp_path), **names)
    again = load_model(str(tmp_path / "c2i_B_64.safetensors") if family == "llamagen" else str(tmp_path), device="cpu",
                       dtype=torch.float32)
    if family == "lumina2":
        again.target_size = None
    t = lambda a: a.components()[0]["transformer"]  # noqa: E731
    assert resident_bytes(t(again)) == resident_bytes(t(adapter)) and is_quantized(t(again))
    assert torch.equal(greedy(again, "ntp").codes, greedy(adapter, "ntp").codes)


def test_a_quantized_pipeline_saves_and_loads_as_saved(folders, tmp_path):
    from transformers import BitsAndBytesConfig

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    for family, q in (("janus", nf4), ("llamagen", "int8")):
        path = folders[family]
        pipe = ZipARPipeline.from_llamagen_checkpoints(path, os.path.join(os.path.dirname(path), "vq_ds16_c2i.pt"),
                                                       n_head=4, image_size=64, quantization=q) \
            if family == "llamagen" else ZipARPipeline.from_pretrained(path, quantization=q, dtype=torch.float32)
        adapter = pipe.build_adapter()
        assert is_quantized(adapter.components()[0]["transformer"])
        kw = dict(**REQUESTS[family], guidance_scale=SCALE, temperature=0, window=2, output_type="codes")
        first = pipe(**kw).codes
        pipe.save_pretrained(str(tmp_path / family))
        again = ZipARPipeline.from_pretrained(str(tmp_path / family))
        assert is_quantized(again.build_adapter().components()[0]["transformer"])
        assert torch.equal(again(**kw).codes, first)
    full = ZipARPipeline.from_pretrained(str(tmp_path / "llamagen"))  # saved int8: asking nf4 of it is refused
    assert full.transformer.config.quantization["method"] == "int8"


# -- the command line -------------------------------------------------------------------------------------

def test_quantize_is_part_of_a_sample_set_and_an_image_s_record(tmp_path, capsys):
    from PIL import Image

    args = ["--model", "demo", "--device", "cpu", "--window", "4", "--cfg", "2"]
    assert main(["generate", *args, "--class-label", "2", "--quantize", "int8", "-o", str(tmp_path / "q.png")]) == 0
    meta = json.loads(Image.open(tmp_path / "q.png").text["zipar"])
    assert meta["model"]["options"] == {"quantize": "int8"}
    assert "memory plan:" in capsys.readouterr().err
    out = tmp_path / "set"
    assert main(["sample", *args, "--classes", "0", "--out", str(out), "--quantize", "nf4", "--npz", ""]) == 0
    assert main(["sample", *args, "--classes", "0", "--out", str(out), "--npz", ""]) == 2
    assert "model.options.quantize" in capsys.readouterr().err


def test_convert_writes_a_quantized_folder_once(tmp_path, capsys):
    assert main(["convert", "demo", str(tmp_path / "demo-nf4"), "--quantize", "nf4"]) == 0
    assert "quantized nf4 (loads as saved)" in capsys.readouterr().out
    adapter = load_model(str(tmp_path / "demo-nf4"), device="cpu")
    assert is_quantized(adapter.gpt) and adapter.gpt.zipar_quantization.method == "nf4"


def test_memory_plans_a_published_model_a_folder_and_checkpoint_files(folders, capsys):
    assert main(["memory", "Janus-Pro-7B", "--quantize", "nf4", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["quantization"] == "nf4" and plan["grid"] == [24, 24] and plan["window"] == 16
    assert plan["total"] == plan["weights"] + plan["runtime"] + max(plan["kv_cache"] + plan["activations"],
                                                                   plan["vq_decode"])
    assert main(["memory", folders["emu3"], "--device", "cpu", "--batch-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "batch 2 with guidance" in text and "total on cpu" in text
    assert main(["memory", folders["llamagen"], "--n-head", "4", "--image-size", "64", "--quantize", "int8"]) == 0
    assert "quantization int8" in capsys.readouterr().out


# -- ComfyUI -----------------------------------------------------------------------------------------------

@pytest.fixture
def comfy(monkeypatch):
    """comfy.model_management / model_patcher / ops fakes: a ModelPatcher that loads as ComfyUI's does in small
    (modules without comfy_cast_weights moved whole when they fit the budget; comfy-cast ones left on the CPU and
    marked once over it), and a device of ``total`` bytes."""
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    mm = types.ModuleType("comfy.model_management")
    mm.total = 1 << 40
    mm.loads = []
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.get_total_memory = lambda device=None: mm.total
    mm.minimum_inference_memory = lambda: 0
    mm.throw_exception_if_processing_interrupted = lambda: None
    mm.InterruptProcessingException = type("Interrupt", (Exception,), {})

    def load_models_gpu(models, memory_required=0, force_full_load=False, minimum_memory_required=None):
        mm.loads.append(dict(memory_required=memory_required, force_full_load=force_full_load,
                             minimum_memory_required=minimum_memory_required))
        for p in models:
            p.load(torch.device("cpu"), 0 if force_full_load else mm.total - (minimum_memory_required or 0))
    mm.load_models_gpu = load_models_gpu
    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model, self.size, self.cast = model, size, []

        def load(self, device_to=None, lowvram_model_memory=0, *args, **kwargs):
            used = 0
            for m in sorted((m for m in self.model.modules() if list(m.parameters(recurse=False))),
                            key=lambda m: -resident_bytes(m)):
                size = resident_bytes(m)
                if lowvram_model_memory and hasattr(m, "comfy_cast_weights") and used + size > lowvram_model_memory:
                    m.comfy_cast_weights = True
                    self.cast.append(m)
                else:
                    used += size
    mp.ModelPatcher = ModelPatcher
    ops = types.ModuleType("comfy.ops")

    def twin(cls):
        return type(cls.__name__, (cls,), {"comfy_cast_weights": False})
    ops.disable_weight_init = types.SimpleNamespace(Linear=twin(torch.nn.Linear), Conv2d=twin(torch.nn.Conv2d),
                                                    GroupNorm=twin(torch.nn.GroupNorm),
                                                    LayerNorm=twin(torch.nn.LayerNorm))
    comfy.model_management, comfy.model_patcher, comfy.ops = mm, mp, ops
    for name, mod in [("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                      ("comfy.ops", ops)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return mm


def _sample(handle):
    from zipar.nodes.sampler import ZipARSampler

    return ZipARSampler().sample(handle, prompt="3", negative_prompt="", seed=0, guidance_scale=2.0, temperature=0.0,
                                 top_k=0, top_p=1.0, mode="fixed", window=4, width=0, height=0, batch_size=1)


def test_comfyui_loads_quantized_reports_its_size_and_offloads_what_does_not_fit(comfy):
    from zipar.nodes.loader import BUILTIN_DEMO, ModelLoadError, ZipARModelLoader

    (full,) = ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "none")
    (handle,) = ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "nf4")
    assert is_quantized(handle.adapter.gpt) and handle.patcher.size == resident_bytes(handle.patcher.model)
    assert handle.patcher.size < 0.5 * full.patcher.size  # the quantized size is what ComfyUI frees memory for
    codes, stats = _sample(handle)
    load = comfy.loads[-1]
    assert load["force_full_load"] and load["memory_required"] > 0 and "offloaded" not in stats
    plan = handle.info["planned_bytes"]
    comfy.total = plan - 1  # does not fit whole: ComfyUI's lowvram path, its castable layers on the CPU
    (small,) = ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "nf4")
    assert small.lowvram and small.pinned > 0
    assert all(type(m).__module__ != "torch.nn.modules.linear" for m in small.adapter.gpt.modules())
    codes2, stats2 = _sample(small)
    assert not comfy.loads[-1]["force_full_load"] and comfy.loads[-1]["minimum_memory_required"] > small.pinned
    assert "ran offloaded (ComfyUI's lowvram)" in stats2 and small.info["offloaded"][0] > 0
    assert torch.equal(codes2.codes, codes.codes)  # the same tokens, offloaded or not
    comfy.total = 1 << 18  # not even what cannot be offloaded fits: refused, naming what would
    with pytest.raises(ModelLoadError, match="ComfyUI can free 0.00 GiB"):
        ZipARModelLoader().load(BUILTIN_DEMO, "fp32", "none")

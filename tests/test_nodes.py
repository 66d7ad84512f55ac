"""The ComfyUI nodes without ComfyUI: input specs, the node chain on a tiny model, progress, Cancel,
memory wrapping and the errors users see. ComfyUI's modules are replaced by small fakes where a test
needs them (``fake_comfy``)."""
import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch
from helpers import tiny_gpt, tiny_vq
from zipar.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from zipar.nodes import comfy_glue as glue
from zipar.nodes.decode import ZipARVQDecode
from zipar.nodes.loader import BUILTIN_DEMO, ModelLoadError, ZipARModelLoader, demo_facts
from zipar.nodes.sampler import ZipARSampler, class_labels_from_prompt
from zipar.zipar_core.models import registry
from zipar.zipar_core.models.llamagen import LlamaGenAdapter
from zipar.zipar_core.modes import NAMES as MODES
from zipar.zipar_core.modes import expected_passes
from zipar.zipar_core.modes import get as get_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def tiny_handle():
    """Class-conditional LlamaGen, 10 classes, 6x6 tokens (96 px), 96 codes, with its VQ decoder."""
    return glue.wrap_model(LlamaGenAdapter(tiny_gpt("c2i"), tiny_vq()), "tiny")


def sample(handle, **kw):
    args = {"prompt": "3", "negative_prompt": "", "seed": 0, "guidance_scale": 2.0, "temperature": 1.0, "top_k": 0,
            "top_p": 1.0, "mode": "fixed", "window": 2, "width": 0, "height": 0, "batch_size": 1}
    args.update(kw)
    return ZipARSampler().sample(handle, **args)


# ----------------------------------------------------------------------------------------------------
# Fake ComfyUI


class FakeInterrupt(Exception):
    pass


@pytest.fixture
def fake_comfy(monkeypatch):
    """comfy.model_management (interrupt flag), comfy.utils (ProgressBar recording its updates),
    comfy.cli_args (previews on); no comfy.model_patcher."""
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = FakeInterrupt
    mm.interrupt_processing = False

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_processing:
            mm.interrupt_processing = False
            raise FakeInterrupt()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.loads = []
    mm.load_models_gpu = lambda models, **kw: mm.loads.append((models, kw))
    mm.soft_empty_cache = lambda *a, **k: None
    utils = types.ModuleType("comfy.utils")
    utils.updates = []

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            utils.updates.append((value, total, preview))
            throw_exception_if_processing_interrupted()  # the real hook checks for Cancel too

    utils.ProgressBar = ProgressBar
    cli = types.ModuleType("comfy.cli_args")
    cli.args = types.SimpleNamespace(preview_method=types.SimpleNamespace(value="auto"), preview_size=256)
    comfy.model_management, comfy.utils, comfy.cli_args = mm, utils, cli
    for name, mod in [("comfy", comfy), ("comfy.model_management", mm), ("comfy.utils", utils),
                      ("comfy.cli_args", cli)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(mm=mm, utils=utils)


# ----------------------------------------------------------------------------------------------------
# Node definitions


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_input_types_are_well_formed(name):
    cls = NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    names = []
    for section in ("required", "optional"):
        for inp, entry in spec.get(section, {}).items():
            names.append(inp)
            assert isinstance(entry, tuple) and len(entry) == 2, inp
            kind, opts = entry
            assert isinstance(opts, dict) and opts.get("tooltip", "").strip(), f"{name}.{inp} needs a tooltip"
            if isinstance(kind, list):  # combo
                assert kind and all(isinstance(o, str) for o in kind), inp
                assert opts.get("default", kind[0]) in kind, inp
            elif kind in ("INT", "FLOAT"):
                lo, hi, d = opts["min"], opts["max"], opts["default"]
                assert lo <= d <= hi, inp
                assert isinstance(d, int) if kind == "INT" else isinstance(d, (int, float)), inp
                assert opts.get("step", 1) > 0, inp
            elif kind == "BOOLEAN":
                assert isinstance(opts["default"], bool), inp
            elif kind == "STRING":
                assert isinstance(opts.get("default", ""), str), inp
            else:
                assert kind.isupper() and kind.replace("_", "").isalnum(), f"custom type {kind!r}"
    # the function takes exactly the inputs (optional ones with a default)
    import inspect

    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    assert [p for p in params if p != "self"] == names
    for inp in spec.get("optional", {}):
        assert params[inp].default is not inspect.Parameter.empty
    assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert cls.CATEGORY.startswith("ZipAR/") and cls.DESCRIPTION
    assert NODE_DISPLAY_NAME_MAPPINGS[name].startswith("ZipAR ")


def test_seed_has_control_after_generate():
    seed = ZipARSampler.INPUT_TYPES()["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == 0xFFFFFFFFFFFFFFFF


def test_pack_imports_without_torch_or_comfy():
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('zipar', {os.path.join(ROOT, '__init__.py')!r}, "
            f"submodule_search_locations=[{ROOT!r}]); m = importlib.util.module_from_spec(spec); "
            "sys.modules['zipar'] = m; spec.loader.exec_module(m); "
            "assert len(m.NODE_CLASS_MAPPINGS) == 3; "
            "bad = [k for k in ('torch', 'comfy', 'diffusers', 'transformers') if k in sys.modules]; "
            "assert not bad, bad; m.NODE_CLASS_MAPPINGS['ZipARModelLoader'].INPUT_TYPES()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


# ----------------------------------------------------------------------------------------------------
# The node chain


def test_chain_returns_an_image_of_the_right_shape_and_range():
    torch.set_num_threads(1)
    handle = tiny_handle()
    codes, stats = sample(handle, prompt="1, 4", batch_size=3, window=2)
    assert codes.codes.shape == (3, 6, 6) and codes.codes.dtype == torch.long
    assert codes.codes.min() >= 0 and codes.codes.max() < 96
    assert "forward passes" in stats and "NTP needs 36" in stats and "x fewer passes" in stats
    assert codes.stats["passes"] == (6 - 1) * 2 + 6  # eq. 1: (H-1)*s + W
    (image,) = ZipARVQDecode().decode(codes)
    assert image.shape == (3, 6 * 2, 6 * 2, 3)  # tiny VQ: 2 px per token
    assert image.dtype == torch.float32 and image.device.type == "cpu"
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_batch_image_matches_single_run_with_its_seed():
    torch.set_num_threads(1)
    handle = tiny_handle()
    batch, _ = sample(handle, seed=10, batch_size=2, mode="adaptive", window=2)
    single, _ = sample(handle, seed=11, batch_size=1, mode="adaptive", window=2)
    assert torch.equal(batch.codes[1], single.codes[0])


def test_builtin_demo_model_loads_and_samples():
    torch.set_num_threads(1)
    (handle,) = ZipARModelLoader().load(BUILTIN_DEMO, "fp32")
    assert handle.adapter.family == "llamagen" and handle.adapter.conditioning == "class"
    codes, stats = sample(handle, prompt="3", window=8, guidance_scale=2.0, mode="fixed", width=32, height=32)
    (image,) = ZipARVQDecode().decode(codes)
    assert image.shape == (1, 32, 32, 3) and 0 <= image.min() and image.max() <= 1
    assert codes.stats["passes"] == 15 * 8 + 16  # 16x16 tokens, window 8


def test_progress_and_previews(fake_comfy):
    torch.set_num_threads(1)
    codes, _ = sample(tiny_handle(), window=2)
    ups = fake_comfy.utils.updates
    passes = codes.stats["passes"]
    values = [v for v, _, _ in ups]
    assert values[: passes] == list(range(1, passes + 1)) and ups[-1][:2] == (passes, passes)
    previews = [p for _, _, p in ups if p is not None]
    assert 2 <= len(previews) <= passes
    kind, image, size = previews[-1]
    assert kind == "JPEG" and image.size == (12, 12) and size == 256


def test_cancel_raises_comfy_interrupt_within_one_pass(fake_comfy):
    torch.set_num_threads(1)
    handle = tiny_handle()
    adapter = handle.adapter
    calls = []
    real_forward = adapter.forward

    def forward(*a, **k):  # the user presses Cancel while the 4th decoding pass runs
        calls.append(1)
        if len(calls) == 4:
            fake_comfy.mm.interrupt_processing = True
        return real_forward(*a, **k)

    adapter.forward = forward
    with pytest.raises(FakeInterrupt):
        sample(handle, window=2)
    assert len(calls) == 4  # no pass started after Cancel
    adapter.forward = real_forward
    codes, _ = sample(handle, window=2)  # the next run works
    assert codes.codes.min() >= 0


def test_model_is_wrapped_for_comfy_memory_management(fake_comfy, monkeypatch):
    made = []

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            made.append(self)
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = ModelPatcher
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", mp)
    handle = tiny_handle()
    assert handle.patcher is made[0]
    container = handle.patcher.model
    assert isinstance(container, torch.nn.Module) and set(container.parts) == {"gpt", "vq"}
    assert container.parts["gpt"] is handle.adapter.gpt  # the adapter's own modules, not copies
    n = sum(p.numel() for p in container.parameters())
    assert n == sum(p.numel() for m in (handle.adapter.gpt, handle.adapter.vq) for p in m.parameters())
    assert container.get_dtype() == torch.float32
    assert handle.load() is handle.adapter
    assert fake_comfy.mm.loads == [([handle.patcher], {"memory_required": 0, "force_full_load": True})]


def test_adapter_modules_skip_nested_and_reach_helpers():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2))
    helper = types.SimpleNamespace(model=torch.nn.Linear(3, 3))
    adapter = types.SimpleNamespace(model=outer, backbone=outer[0], t5=helper, name="x")
    mods = glue.adapter_modules(adapter)
    assert set(mods) == {"model", "t5_model"}


# ----------------------------------------------------------------------------------------------------
# Model folder


def test_model_entries_and_safe_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    (tmp_path / "c2i_B_256.pt").write_bytes(b"x")  # a loose GPT file with its VQ beside it
    (tmp_path / "vq_ds16_c2i.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".cache").mkdir()
    shared = tmp_path / "llamagen"  # several GPT checkpoints sharing a VQ: listed one by one
    shared.mkdir()
    for name in ("c2i_B_256.pt", "c2i_L_256.pt", "vq_ds16_c2i.pt"):
        (shared / name).write_bytes(b"x")
    one = tmp_path / "LlamaGen-t2i-XL-512"  # one LlamaGen model: the folder is the entry
    (one / "flan-t5-xl").mkdir(parents=True)
    (one / "flan-t5-xl" / "config.json").write_text("{}")
    for name in ("t2i_XL_stage2_512.pt", "vq_ds16_t2i.pt"):
        (one / name).write_bytes(b"x")
    (tmp_path / "Janus-Pro-1B").mkdir()
    (tmp_path / "Janus-Pro-1B" / "config.json").write_text("{}")
    (tmp_path / "Janus-Pro-1B" / "model.safetensors").write_bytes(b"x")
    assert glue.list_model_entries() == ["c2i_B_256.pt", "Janus-Pro-1B", "LlamaGen-t2i-XL-512",
                                         "llamagen/c2i_B_256.pt", "llamagen/c2i_L_256.pt"]
    assert ZipARModelLoader.INPUT_TYPES()["required"]["model_name"][0][0] == BUILTIN_DEMO
    assert glue.resolve_model_path("Janus-Pro-1B") == str(tmp_path / "Janus-Pro-1B")
    assert glue.resolve_model_path("llamagen/c2i_L_256.pt") == str(shared / "c2i_L_256.pt")
    outside = tmp_path.parent / "secret.pt"
    for bad in ["../secret.pt", str(outside), "llamagen/../../secret.pt", ""]:
        with pytest.raises(ValueError, match="pick an entry from the"):
            glue.resolve_model_path(bad)
    with pytest.raises(FileNotFoundError, match="Put the model"):
        glue.resolve_model_path("missing.pt")
    with pytest.raises(ValueError, match="pick an entry"):
        ZipARModelLoader().load("../secret.pt", "auto")


def test_listing_and_loading_agree_on_file_names(tmp_path, monkeypatch):
    """The node's folder listing and the loader's file finding use one set of naming rules (model_files):
    upper-case suffixes count, a VQ file is found beside its GPT and never offered alone."""
    from zipar.zipar_core.models.llamagen import find_llamagen_files

    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    one = tmp_path / "LlamaGen-B"
    one.mkdir()
    for name in ("C2I_B_256.PT", "VQ_DS16_C2I.Safetensors", "readme.md"):
        (one / name).write_bytes(b"x")
    (tmp_path / "VQ_only.pth").write_bytes(b"x")
    assert glue.list_model_entries() == ["LlamaGen-B"]
    gpt, vq, t5 = find_llamagen_files(str(one))
    assert (os.path.basename(gpt), os.path.basename(vq), t5) == ("C2I_B_256.PT", "VQ_DS16_C2I.Safetensors", None)


def test_unknown_family_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, tmp_path / "mystery.pt")
    torch.save({"model": tiny_vq().state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    with pytest.raises(ValueError) as err:
        ZipARModelLoader().load("mystery.pt", "fp32")
    msg = str(err.value)
    assert "mystery.pt" in msg and "not a LlamaGen GPT checkpoint" in msg and "models/zipar" in msg
    assert "Janus-Pro" in msg  # the families it could have been


# ----------------------------------------------------------------------------------------------------
# Errors that say what to change


def test_window_larger_than_grid():
    with pytest.raises(ValueError, match=r"window 7 is larger than the grid width \(6 tokens.*1\.\.6"):
        sample(tiny_handle(), window=7)


def test_unsupported_width():
    with pytest.raises(ValueError, match=r"width 7 is not a positive multiple of 2 px.*Change width/height"):
        sample(tiny_handle(), width=7)


def test_class_prompt_must_be_a_class_number():
    with pytest.raises(ValueError, match=r"class-conditional: write a class number in the prompt \(0 to 9\)"):
        sample(tiny_handle(), prompt="a dog")
    with pytest.raises(ValueError, match=r"class 12 is out of range: this model knows classes 0 to 9;"):
        class_labels_from_prompt("3, 12", 10, 2)
    assert class_labels_from_prompt(" 1,2 ", 10, 5) == [1, 2, 1, 2, 1]
    assert class_labels_from_prompt("1 2; 3", 10, 3) == [1, 2, 3]


def test_empty_class_prompt_picks_class_seed_plus_i():
    """A freshly added sampler (empty prompt) on a class model runs: image i gets class (seed + i) mod the
    class count, so a batch image still matches a single run with its seed."""
    assert class_labels_from_prompt("", 10, 4, seed=8) == [8, 9, 0, 1]
    handle = tiny_handle()
    batch, stats = sample(handle, prompt="", seed=5, batch_size=2)
    single, _ = sample(handle, prompt="", seed=6, batch_size=1)
    assert torch.equal(batch.codes[1], single.codes[0])
    assert "classes: 5, 6" in stats


def test_demo_class_errors_and_tooltip_name_its_own_classes():
    facts = demo_facts()  # read from the demo's files and dataset code, as the node does
    (handle,) = ZipARModelLoader().load(BUILTIN_DEMO, "fp32")
    assert handle.adapter.num_classes == facts.num_classes
    listing = ", ".join(f"{i} {n}" for i, n in enumerate(facts.class_names))
    top = facts.num_classes - 1
    with pytest.raises(ValueError, match="ZipAR Sampler: ") as err:
        sample(handle, prompt="a dog")
    assert f"0 to {top}: {listing}" in str(err.value) and "207" not in str(err.value)
    with pytest.raises(ValueError) as err:
        sample(handle, prompt=str(facts.num_classes))
    assert f"class {facts.num_classes} is out of range" in str(err.value) and listing in str(err.value)
    tooltip = ZipARSampler.INPUT_TYPES()["required"]["prompt"][1]["tooltip"]
    assert f"the built-in demo 0 to {top}: {listing}" in tooltip and "0 to 999" in tooltip
    name = facts.class_names[1]
    assert class_labels_from_prompt(f"{name.upper()}, 0", facts.num_classes, 2, names=facts.class_names) == [1, 0]
    width = ZipARSampler.INPUT_TYPES()["required"]["width"][1]["tooltip"]
    assert f"the built-in demo {facts.pixels_per_token} ({facts.image_size} px" in width
    assert "LlamaGen 16" in width and "Emu3-Gen 8" in width


# ----------------------------------------------------------------------------------------------------
# Defaults from the registry, and the stats output


def test_widgets_default_to_the_models_defaults_and_stats_say_which_were_used():
    spec = ZipARSampler.INPUT_TYPES()["required"]
    assert [spec[k][1]["default"] for k in ("guidance_scale", "top_k", "window")] == [-1, -1, -1]
    assert spec["mode"][0] == list(MODES)  # every mode of the core, new ones included
    handle = tiny_handle()
    d = registry.defaults_for(handle.adapter)
    codes, stats = sample(handle, guidance_scale=-1, top_k=-1, window=-1)
    window = min(d.window, 6)
    assert codes.settings["guidance_scale"] == d.guidance_scale and codes.settings["top_k"] == d.top_k
    assert codes.settings["window"] == window
    used = next(line for line in stats.splitlines() if line.startswith("used:"))
    assert re.fullmatch(rf"used: mode fixed, window {window}, guidance_scale {d.guidance_scale:g}, temperature 1, "
                        rf"top_k {d.top_k}, top_p 1, passes {codes.stats['passes']}, time \d+\.\d\d s", used), used
    _, stats = sample(handle, mode="ntp")
    assert "used: mode ntp, guidance_scale" in stats  # ntp uses no window (it decodes whole rows): none named


# ----------------------------------------------------------------------------------------------------
# Progress totals


@pytest.mark.parametrize("mode", MODES)
def test_progress_total_of_every_mode(fake_comfy, mode):
    """ntp/fixed: one total, known up front, in every message, ending at total/total. Other modes: start at
    the estimate, never below the passes done, grow only while the image is unfinished, end at passes/passes."""
    torch.set_num_threads(1)
    codes, _ = sample(tiny_handle(), mode=mode, window=2, batch_size=2)
    ups = [(v, t) for v, t, _ in fake_comfy.utils.updates]
    passes = codes.stats["passes"]
    config = registry_config(mode)
    estimate = expected_passes(codes_layout(), config)
    assert ups[-1] == (passes, passes) and all(v <= t for v, t in ups)
    assert [v for v, _ in ups[:passes]] == list(range(1, passes + 1))
    if get_mode(config.mode).exact_passes:
        assert {t for _, t in ups} == {passes} and passes == estimate and len(ups) == passes
    else:
        totals = [t for _, t in ups[:passes]]
        assert totals[0] == max(estimate, 1) and totals == sorted(totals)
        assert all(t == max(estimate, v + 1) for v, t in ups[:passes - 1])  # grows by what is known: one more


def registry_config(mode):
    """The settings the node decoded with: the registry's defaults, with the mode and window the test gave."""
    from zipar.zipar_core.config import resolve

    return resolve(tiny_handle().load().defaults(), codes_layout().cols, {"mode": mode, "window": 2}, warn=False)


def codes_layout():
    from zipar.zipar_core.layout import TokenLayout

    return TokenLayout(rows=6, cols=6, prefix=1)


def test_progress_estimate_grows_honestly(fake_comfy):
    """An estimate that is too low: the total becomes passes + 1 while tokens are missing, never the passes
    done, and the last message reads passes/passes."""
    codes = torch.full((1, 2, 2), -1)
    progress = glue.PassProgress(3, exact=False)
    for p in range(1, 7):
        if p == 6:
            codes.fill_(0)  # the last pass decodes the last token
        progress(p, codes, types.SimpleNamespace(passes=p))
    progress.finish()
    assert [(v, t) for v, t, _ in fake_comfy.utils.updates] == [(1, 3), (2, 3), (3, 4), (4, 5), (5, 6), (6, 6)]


def test_progress_exact_total_never_changes(fake_comfy):
    codes = torch.full((1, 2, 2), -1)
    progress = glue.PassProgress(4, exact=True)
    for p in range(1, 5):
        progress(p, codes, types.SimpleNamespace(passes=p))
    progress.finish()
    assert [(v, t) for v, t, _ in fake_comfy.utils.updates] == [(1, 4), (2, 4), (3, 4), (4, 4)]


# ----------------------------------------------------------------------------------------------------
# Every loader failure: entry, cause, fix


def _config_without_weights(folder):
    (folder / "Janus-Pro-1B").mkdir()
    (folder / "Janus-Pro-1B" / "config.json").write_text(json.dumps({"model_type": "janus"}))
    return "Janus-Pro-1B"


def _corrupt_checkpoint(folder):
    (folder / "llamagen").mkdir()
    (folder / "llamagen" / "c2i_B_256.pt").write_bytes(b"<html>502 Bad Gateway</html>" * 8)
    torch.save({"model": tiny_vq().state_dict()}, folder / "llamagen" / "vq_ds16_c2i.pt")
    return "llamagen/c2i_B_256.pt"


def _unknown_family_file(folder):
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, folder / "mystery.pt")
    torch.save({"model": tiny_vq().state_dict()}, folder / "vq_ds16_c2i.pt")
    return "mystery.pt"


def _unknown_model_type(folder):
    (folder / "bert").mkdir()
    (folder / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return "bert"


def _gpt_without_vq(folder):
    torch.save({"model": tiny_gpt("c2i").state_dict()}, folder / "c2i_B_96.pt")
    return "c2i_B_96.pt"


def _damaged_config(folder):
    (folder / "Emu3-Gen").mkdir()
    (folder / "Emu3-Gen" / "config.json").write_text('{"model_type": "emu3", ')
    return "Emu3-Gen"


def _truncated_safetensors(folder):
    (folder / "c2i_B_256.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    torch.save({"model": tiny_vq().state_dict()}, folder / "vq_ds16_c2i.pt")
    return "c2i_B_256.safetensors"


LOAD_FAILURES = {  # name -> (make the files, cause in the message, fix in the message)
    "config without weights": (_config_without_weights, "has no weight files", "download"),
    "corrupt checkpoint": (_corrupt_checkpoint, "CheckpointError", "download the file again"),
    "truncated safetensors": (_truncated_safetensors, "not a readable safetensors file", "download the file again"),
    "unknown family file": (_unknown_family_file, "not a LlamaGen GPT checkpoint", "supported family"),
    "unknown model_type": (_unknown_model_type, "unsupported model type 'bert'", "supported family"),
    "GPT without its VQ": (_gpt_without_vq, "no VQ tokenizer", "add the missing part beside the model"),
    "damaged config.json": (_damaged_config, "JSONDecodeError", "config.json) is damaged"),
    "path outside the folder": (lambda folder: "../secret.pt", "pick an entry from the", "pick an entry"),
    "missing entry": (lambda folder: "gone.pt", "FileNotFoundError", "press 'r'"),
}


@pytest.mark.parametrize("kind", sorted(LOAD_FAILURES))
def test_every_loader_failure_names_entry_cause_and_fix(kind, tmp_path, monkeypatch):
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    make, cause, fix = LOAD_FAILURES[kind]
    name = make(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        ZipARModelLoader().load(name, "fp32")
    msg = str(err.value)
    assert msg.startswith(f"ZipAR Model Loader could not load {name!r}"), msg
    _, cause_line, fix_line = msg.split("\n")
    assert cause in cause_line and cause_line.startswith("Cause (") and fix_line.startswith("Fix: ") and fix in fix_line


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("CUDA out of memory"), ImportError("no module named x"),
                                   ZeroDivisionError("something unforeseen")], ids=lambda e: type(e).__name__)
def test_any_exception_type_is_wrapped(error, tmp_path, monkeypatch):
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    name = _gpt_without_vq(tmp_path)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr("zipar.nodes.loader._load_model", fail)
    with pytest.raises(ModelLoadError, match=rf"could not load '{name}'.*\nCause \({type(error).__name__}\).*\nFix: "):
        ZipARModelLoader().load(name, "fp32")


def test_comfy_interrupt_passes_through_the_loader(fake_comfy, tmp_path, monkeypatch):
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    name = _gpt_without_vq(tmp_path)

    def cancelled(*a, **k):
        raise FakeInterrupt()

    monkeypatch.setattr("zipar.nodes.loader._load_model", cancelled)
    with pytest.raises(FakeInterrupt):
        ZipARModelLoader().load(name, "fp32")


def test_dtype_choices():
    assert glue.pick_dtype("auto", "cpu") == torch.float32
    assert glue.pick_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="auto, bf16, fp16, fp32"):
        glue.pick_dtype("int8")

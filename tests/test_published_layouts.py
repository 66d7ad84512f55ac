"""The model folders people download load in every layout they are published in, through every front door.

For each transformers-backed family a tiny model is written twice: in the original publisher's layout
(``layouts.py``: DeepSeek's Janus, BAAI's Emu3-Gen + Emu3-VisionTokenizer, Alpha-VLLM's Lumina-mGPT + Meta's
Chameleon tokenizer files) and in transformers' own (``save_pretrained``). Both, loaded through
``load_model``, ``ZipARPipeline.from_pretrained``, the ComfyUI loader and a hub id (offline, from a hub
cache), hold the reference's tensors and decode the reference's codes (greedy, ntp and a ZipAR window). A
damaged copy of each (a tensor missing, a shape wrong, a shard missing) is refused with a message naming the
file, the tensor and the fix, before any model is built.
"""
import json
import os
import re
import shutil
import tempfile

import pytest
import torch
from helpers import quiet
from layouts import (
    emu3_vocab,
    live_models,
    tiktoken_encode,
    tiny_lumina_parts,
    write_emu3_original,
    write_janus_original,
    write_lumina_original,
)
from zipar import ZipARPipeline
from zipar.cli import main
from zipar.nodes import comfy_glue as glue
from zipar.nodes.loader import ZipARModelLoader
from zipar.zipar_core.checkpoints import CheckpointError
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.models import load_model, registry
from zipar.zipar_core.sampler import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("janus", "emu3", "lumina")
CALLS = {"janus": {"prompt": ["a cat on the mat", "a dog"]},
         "emu3": {"prompt": ["a cat on the mat", "a dog"], "height": 32, "width": 40},
         "lumina": {"prompt": ["a cat on the mat", "a dog"], "height": 64, "width": 96}}
# how each original folder is written: Janus as DeepSeek ships Janus-Pro-7B (two .bin shards), Emu3-Gen as
# safetensors shards, Lumina as safetensors shards of a two-way model-parallel checkpoint
ORIGINAL = {"janus": {"fmt": "bin", "shards": 2}, "emu3": {"fmt": "safetensors", "shards": 2},
            "lumina": {"fmt": "safetensors", "shards": 2}}


class Reference:
    """A tiny model of a family, as an adapter, and writers of its folders."""

    def __init__(self, family):
        self.family = family
        if family == "janus":
            from zipar.zipar_core.models.janus import JanusAdapter
            from zipar.zipar_core.models.tiny import tiny_janus

            model, tok = tiny_janus(vision_size={"num_attention_heads": 16})  # SigLIP-L's 16 heads, by name
            self.adapter = JanusAdapter(model, tok)
        elif family == "emu3":
            from zipar.zipar_core.models.emu3 import Emu3Adapter
            from zipar.zipar_core.models.emu3_original import build_tokenizer
            from zipar.zipar_core.models.tiny import tiny_emu3

            model, _ = tiny_emu3(vocab=emu3_vocab(64))
            with tempfile.TemporaryDirectory() as scratch:  # the tokenizer as converted; checked against tiktoken below
                self.adapter = Emu3Adapter(model, build_tokenizer(write_emu3_original(model, scratch)))
        else:
            from zipar.zipar_core.models.lumina import LuminaAdapter

            model, tok, decoder = tiny_lumina_parts(parallel=2)
            self.adapter = LuminaAdapter(model, tok, decoder, target_size=None)
        self.model = self.adapter.model

    def write(self, layout, folder, **options):
        a = self.adapter
        if layout == "transformers":
            a.model.save_pretrained(folder, **options)
            a.tokenizer.save_pretrained(folder)
            if self.family == "lumina":
                from zipar.zipar_core.models.chameleon_vqgan import save_safetensors

                save_safetensors(a.vqgan, os.path.join(folder, "vqgan.safetensors"))
            return str(folder)
        opts = {**ORIGINAL[self.family], **options}
        if self.family == "janus":
            return write_janus_original(a.model, a.tokenizer, folder, **opts)
        if self.family == "emu3":
            return write_emu3_original(a.model, folder, **opts)
        return write_lumina_original(a.model, a.tokenizer, a.vqgan, folder, parallel=2, **opts)

    def codes(self, adapter=None):
        """Greedy codes of ntp and of a ZipAR window, with guidance, for two prompts of different lengths."""
        adapter = adapter or self.adapter
        cond = adapter.prepare(**CALLS[self.family], guidance_scale=3.0)
        return [generate(adapter, cond, ZipARConfig(mode=mode, window=2, temperature=0, guidance_scale=3.0)).codes
                for mode in ("ntp", "fixed")]

    def check(self, adapter):
        """Same tensors, same prompt ids, same codes as the reference."""
        assert adapter.family == self.family and type(adapter.model) is type(self.model)
        ours, ref = adapter.model.state_dict(), self.model.state_dict()
        assert set(ours) == set(ref)
        assert all(torch.equal(ours[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(ours[k], ref[k])][:3]
        got, want = self.codes(adapter), self.expected
        assert [c.tolist() for c in got] == [c.tolist() for c in want]
        if self.family == "lumina":
            assert torch.equal(adapter.decode(want[0]), self.adapter.decode(want[0]))


@pytest.fixture(scope="module", params=FAMILIES)
def ref(request):
    r = Reference(request.param)
    r.expected = r.codes()
    assert len({c for grid in r.expected[0].tolist() for row in grid for c in row}) > 4  # not degenerate
    return r


# ----------------------------------------------------------------------------------------------------
# Every front door, both layouts


@pytest.mark.parametrize("layout", ["original", "transformers"])
def test_every_front_door_gives_the_reference_codes(ref, layout, tmp_path, monkeypatch):
    folder = ref.write(layout, tmp_path / f"{ref.family}-{layout}")
    assert registry.detect(folder).name == ref.family
    ref.check(load_model(folder, device="cpu"))

    pipe = quiet(ZipARPipeline.from_pretrained(folder, device="cpu"))
    out = pipe(**CALLS[ref.family], guidance_scale=3.0, mode="fixed", window=2, temperature=0, output_type="codes")
    assert out.codes.tolist() == ref.expected[1].tolist()

    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    assert glue.list_model_entries() == [os.path.basename(folder)]
    handle, = ZipARModelLoader().load(os.path.basename(folder), "fp32")
    ref.check(handle.adapter)


def _fake_hub_cache(cache, repo_id, folder):
    """huggingface_hub's cache layout for one repository at one commit, files copied in."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_of_an_original_layout_loads_offline_from_the_cache(ref, tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder = ref.write("original", tmp_path / "download")
    cache = tmp_path / "hub"
    if ref.family == "emu3":  # the vision tokenizer comes from its own repository, as BAAI's example loads it
        _fake_hub_cache(cache, "BAAI/Emu3-VisionTokenizer", os.path.join(folder, "vision_tokenizer"))
        shutil.rmtree(os.path.join(folder, "vision_tokenizer"))
    if ref.family == "lumina":  # Meta's files are no hub repository: they come with vqgan=
        shutil.move(os.path.join(folder, "tokenizer"), tmp_path / "chameleon-tokenizer")
    _fake_hub_cache(cache, f"zipar-test/{ref.family}-original", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    extra = {"vqgan": str(tmp_path / "chameleon-tokenizer")} if ref.family == "lumina" else {}
    ref.check(load_model(f"zipar-test/{ref.family}-original", device="cpu", cache_dir=str(cache), **extra))
    with pytest.raises(FileNotFoundError, match=r"zipar-test/not-there.*huggingface-cli download"):
        load_model("zipar-test/not-there", cache_dir=str(cache))


# ----------------------------------------------------------------------------------------------------
# Damaged folders: named file, named tensor, the fix, nothing built

DEFECTS = ("tensor missing", "shape wrong", "shard missing")


def _damage(folder, defect):
    """Damage the shard that holds a layer-1 projection; returns (shard file name, tensor name or None)."""
    index = next(f for f in os.listdir(folder) if f.endswith(".index.json"))
    with open(os.path.join(folder, index)) as f:
        weight_map = json.load(f)["weight_map"]
    key = next(k for k in sorted(weight_map) if re.search(r"layers\.1\..*(down_proj|fc2)\.weight$", k))
    shard = weight_map[key]
    path = os.path.join(folder, shard)
    if defect == "shard missing":
        os.remove(path)
        return shard, None
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file, save_file

        sd = load_file(path)
    else:
        sd = torch.load(path, weights_only=True)
    if defect == "tensor missing":
        del sd[key]
    else:
        sd[key] = torch.zeros(3, 5)
    if path.endswith(".safetensors"):
        save_file(sd, path, metadata={"format": "pt"})
    else:
        torch.save(sd, path)
    return shard, key


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("layout", ["original", "transformers"])
def test_damaged_folders_are_refused_with_file_tensor_and_fix(ref, layout, defect, tmp_path):
    options = {"max_shard_size": "60KB"} if layout == "transformers" else {}
    folder = ref.write(layout, tmp_path / "model", **options)
    shard, key = _damage(folder, defect)
    before = live_models(type(ref.model))
    with pytest.raises(CheckpointError) as info:
        load_model(folder, device="cpu")
    message = str(info.value)
    assert shard in message and "Fix:" in message, message
    if key is not None:
        assert re.search(r"layers\.1\..*(down_proj|fc2)\.weight", message), message  # the tensor
    if defect == "shape wrong":
        assert "(3, 5)" in message
    if defect == "shard missing":
        assert "missing" in message and "download" in message
    assert live_models(type(ref.model)) <= before  # no model built (or kept) for a refused checkpoint
    del info


def test_unsharded_original_with_a_tensor_missing_names_it(tmp_path):
    r = Reference("janus")
    folder = r.write("original", tmp_path / "Janus-Pro-1B", shards=1)
    sd = torch.load(os.path.join(folder, "pytorch_model.bin"), weights_only=True)
    del sd["gen_head.vision_head.weight"]
    torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"'gen_head\.vision_head\.weight' is missing from .*pytorch_model\.bin"
                                              r".*Fix: .*deepseek-ai/Janus-Pro"):
        load_model(folder, device="cpu")


# ----------------------------------------------------------------------------------------------------
# Incomplete folders name the part and where it is published


def test_incomplete_folders_name_the_missing_part(tmp_path):
    emu3 = Reference("emu3")
    folder = emu3.write("original", tmp_path / "Emu3-Gen")
    away = tmp_path / "away" / "vision"
    shutil.move(os.path.join(folder, "vision_tokenizer"), away)
    with pytest.raises(CheckpointError, match=r"vision tokenizer.*BAAI/Emu3-VisionTokenizer.*vision_tokenizer"):
        load_model(folder, device="cpu")
    ref = emu3.adapter
    loaded = load_model(folder, device="cpu", vision_tokenizer=str(away))  # given explicitly
    assert loaded.codebook_size == ref.codebook_size
    with pytest.raises(ValueError, match=r"vision tokenizer.*a part of Emu3-Gen.*load the Emu3-Gen folder"):
        load_model(away)
    shutil.move(away, tmp_path / "Emu3-VisionTokenizer")  # beside the model folder: found
    assert load_model(folder, device="cpu").codebook_size == ref.codebook_size
    os.remove(os.path.join(folder, "emu3.tiktoken"))
    with pytest.raises(CheckpointError, match=r"emu3\.tiktoken missing.*BAAI/Emu3-Gen"):
        load_model(folder, device="cpu")

    lumina = Reference("lumina")
    folder = lumina.write("original", tmp_path / "Lumina-mGPT-7B-768")
    shutil.rmtree(os.path.join(folder, "tokenizer"))
    with pytest.raises(CheckpointError, match=r"vqgan\.ckpt and vqgan\.yaml.*Chameleon.*tokenizer"):
        load_model(folder, device="cpu")

    janus = Reference("janus")
    folder = janus.write("original", tmp_path / "Janus-Pro-7B")
    os.remove(os.path.join(folder, "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json.*deepseek-ai/Janus-Pro-7B"):
        load_model(folder, device="cpu")


def test_other_deepseek_multi_modality_models_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "multi_modality", "language_config": {},
                                                      "vision_config": {}, "aligner_config": {}}))
    with pytest.raises(CheckpointError, match="DeepSeek-VL or JanusFlow"):
        load_model(tmp_path, device="cpu")


class NotATensor:  # a pickled object that weights_only refuses to build
    pass


def test_pickles_that_need_more_than_weights_only_are_refused_with_a_one_time_conversion(tmp_path):
    r = Reference("lumina")
    folder = r.write("original", tmp_path / "Lumina-mGPT-7B")  # no size in the name: the tiny sizes are allowed
    ckpt = os.path.join(folder, "tokenizer", "vqgan.ckpt")
    data = torch.load(ckpt, weights_only=True)
    data["callbacks"] = NotATensor()  # e.g. a training framework's object next to the weights
    torch.save(data, ckpt)
    with pytest.raises(CheckpointError, match=r"holds code.*convert it once.*vqgan\.safetensors") as info:
        load_model(folder, device="cpu")
    command = re.search(r'python -c "(.*)"', str(info.value)).group(1)
    exec(command, {"__name__": "convert_once", "NotATensor": NotATensor})  # what the user runs, trusting the file
    assert os.path.isfile(os.path.join(folder, "tokenizer", "vqgan.safetensors"))
    r.expected = r.codes()
    r.check(load_model(folder, device="cpu"))  # the safetensors twin is read, the pickle never again


# ----------------------------------------------------------------------------------------------------
# Conversion helpers, the tokenizer, the listing, zipar convert


def test_emu3_tokenizer_is_tiktoken_s(tmp_path):
    """The converted tiktoken vocabulary gives the ids of tiktoken's own algorithm (special tokens allowed)."""
    from zipar.zipar_core.models.emu3_original import build_tokenizer
    from zipar.zipar_core.models.tiny import tiny_emu3

    tok = build_tokenizer(write_emu3_original(tiny_emu3(vocab=emu3_vocab(64))[0], tmp_path / "e"))
    for text in ["a cat on the mat", "a red dog<|image start|>90*90<|image token|>", "lowres, bad!! the  cat 123",
                 "<|extra_203|>blue\ncat's mat<|visual token 000007|>", "caf\u0065\u0301"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == tiktoken_encode(
            __import__("unicodedata").normalize("NFC", text)), text


def test_name_conversions_invert():
    from zipar.zipar_core.models import emu3_original, janus_original
    from zipar.zipar_core.models.tiny import tiny_emu3, tiny_janus

    for key in tiny_janus()[0].state_dict():
        name = janus_original.hf_name(janus_original.original_name(key))
        assert key == name or key in name, key  # the vision q/k/v come from one fused tensor
    for key in tiny_emu3()[0].state_dict():
        if key.startswith("model.vqmodel."):
            assert emu3_original.vq_name(emu3_original.original_vq_name(key)) == key


def test_comfyui_lists_each_model_folder_once(tmp_path, monkeypatch):
    for family in FAMILIES:
        Reference(family).write("original", tmp_path / f"{family}-original")
    Reference("emu3").write("original", tmp_path / "emu3-beside", vq_folder=tmp_path / "Emu3-VisionTokenizer")
    (tmp_path / "Janus-Pro-7B-hf").mkdir()
    (tmp_path / "Janus-Pro-7B-hf" / "config.json").write_text(json.dumps({"model_type": "janus"}))
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))
    assert glue.list_model_entries() == ["emu3-beside", "emu3-original", "janus-original", "Janus-Pro-7B-hf",
                                         "lumina-original"]


def test_zipar_convert_writes_a_transformers_folder_once(ref, tmp_path, capsys):
    src = ref.write("original", tmp_path / "src")
    dst = tmp_path / "dst"
    assert main(["convert", src, str(dst)]) == 0
    files = os.listdir(dst)
    assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".ckpt", ".tiktoken")) for f in files)  # no pickles, nothing to convert again
    with open(dst / "config.json") as f:
        config = json.load(f)
    assert config["model_type"] == {"janus": "janus", "emu3": "emu3", "lumina": "chameleon"}[ref.family]
    ref.check(load_model(dst, device="cpu"))
    assert type(ref.model).from_pretrained(dst).state_dict().keys() == ref.model.state_dict().keys()  # plain transformers
    assert main(["convert", src, str(dst)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_zipar_convert_llamagen_pickles_to_safetensors(tmp_path):
    from helpers import tiny_gpt, tiny_vq

    torch.save({"model": tiny_gpt("c2i", block_size=36).state_dict()}, tmp_path / "c2i_B_96.pt")
    torch.save({"model": tiny_vq().state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "c2i_B_96.pt"), str(out), "--n-head", "4", "--image-size", "96"]) == 0
    assert sorted(os.listdir(out)) == ["c2i_B_96.safetensors", "vq_ds16_c2i.safetensors"]  # the release's names
    before = load_model(tmp_path / "c2i_B_96.pt", device="cpu", n_head=4, image_size=96)
    after = load_model(out, device="cpu")  # n_head and the image size from the metadata, no pickle
    cond = before.prepare(class_labels=[3, 5], guidance_scale=2.0)
    cfg = ZipARConfig(mode="fixed", window=2, temperature=0, guidance_scale=2.0)
    assert generate(after, cond, cfg).codes.tolist() == generate(before, cond, cfg).codes.tolist()


def test_convert_imports_no_torch_until_it_runs():
    import subprocess
    import sys

    code = ("import sys; from zipar.cli import build_parser; build_parser().parse_args(['convert', 'a', 'b']); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_readme_table_of_published_folders_matches_the_registry():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- published:begin -->\n(.*?)\n<!-- published:end -->", text, re.S)
    assert block, "README lost its published-folders markers"
    assert block.group(1) == registry.published_table(), "paste registry.published_table() between the markers"


def test_command_line_takes_the_vision_tokenizer_as_a_flag(tmp_path, capsys):
    r = Reference("emu3")
    folder = r.write("original", tmp_path / "models" / "Emu3-Gen", vq_folder=tmp_path / "parts" / "vq")
    args = ["generate", "--model", folder, "--prompt", "a cat", "--height", "16", "--width", "24", "--device", "cpu",
            "--mode", "fixed", "--window", "2", "-o", str(tmp_path / "cat.png")]
    assert main(args) == 2 and "BAAI/Emu3-VisionTokenizer" in capsys.readouterr().err
    assert main([*args, "--vision-tokenizer", str(tmp_path / "parts" / "vq")]) == 0
    assert os.path.isfile(tmp_path / "cat.png")


def test_janus_1_3b_and_janus_pro_use_their_own_chat_roles(tmp_path):
    """DeepSeek's README / generation_inference.py: Janus-1.3B speaks "User" / "Assistant", Janus-Pro "<|User|>" /
    "<|Assistant|>". The two configs are alike, so the published name chooses (the registry variant), and the variant
    then travels with the model's config through save_pretrained / zipar convert."""
    from zipar.zipar_core.models.hf_common import encode

    r = Reference("janus")
    pro = load_model(r.write("original", tmp_path / "Janus-Pro-1B"), device="cpu")
    old = load_model(r.write("original", tmp_path / "Janus-1.3B"), device="cpu")
    assert (pro.variant, old.variant) == ("", "janus-1.3b")
    tok = r.adapter.tokenizer

    def prompt_ids(adapter):
        cond = adapter.prepare(prompt="a cat", guidance_scale=1.0)
        return cond.payload.ids[0].tolist()

    assert prompt_ids(pro) == encode(tok, "<|User|>: a cat\n\n<|Assistant|>:", pro.bos_id) + [pro.boi_id]
    assert prompt_ids(old) == encode(tok, "User: a cat\n\nAssistant:", old.bos_id) + [old.boi_id]
    assert prompt_ids(pro) != prompt_ids(old)
    old.save_pretrained(str(tmp_path / "converted"))  # a folder whose name says nothing
    again = load_model(str(tmp_path / "converted"), device="cpu")
    assert again.variant == "janus-1.3b" and prompt_ids(again) == prompt_ids(old)
    assert registry.defaults_for(old) == registry.get("janus").variants["janus-1.3b"]

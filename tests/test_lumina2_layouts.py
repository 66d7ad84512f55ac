"""Lumina-mGPT 2.0 as published loads through every front door; damaged or incomplete folders and bad sizes are
refused in one line that names the part and where it is published.

The tiny model is written as Alpha-VLLM publishes it (``lumina2_layouts.py``: safetensors shards + index, q/k norms
per model-parallel shard, their config.json, tokenizer.json) with MoVQGAN's ``movqgan_270M.ckpt`` (a pickle read
weights-only), and in transformers' layout (what ``zipar convert`` writes).
"""
import json
import os
import re
import shutil

import pytest
import torch
from helpers import quiet
from lumina2_layouts import movqgan_file, tiny_reference, write_original
from PIL import Image
from zipar import ZipARPipeline
from zipar.cli import main
from zipar.nodes import comfy_glue as glue
from zipar.nodes.loader import ZipARModelLoader
from zipar.zipar_core.checkpoints import CheckpointError
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.models import load_model, registry
from zipar.zipar_core.sampler import generate

CALL = {"prompt": ["a cat on the mat", "<hed> a dog"], "height": 32, "width": 64}


@pytest.fixture(scope="module")
def ref():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    adapter = tiny_reference()
    adapter.expected = codes(adapter)
    assert len(set(adapter.expected[0].flatten().tolist())) > 4  # not degenerate
    yield adapter
    torch.set_num_threads(threads)


def codes(adapter):
    """Greedy codes of ntp and of a ZipAR window, under Lumina-mGPT 2.0's decaying guidance (cfg 7)."""
    cond = adapter.prepare(**CALL, guidance_scale=7.0)
    return [generate(adapter, cond, ZipARConfig(mode=m, window=2, temperature=0, guidance_scale=7.0)).codes
            for m in ("ntp", "fixed")]


def check(loaded, ref):
    """Same tensors, same codes, same pixels as the reference."""
    assert loaded.family == "lumina2" and loaded.target_size == 768
    loaded.target_size = None  # the tiny sizes are not its 768-px training sizes
    ours, theirs = loaded.model.state_dict(), ref.model.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert [c.tolist() for c in codes(loaded)] == [c.tolist() for c in ref.expected]
    assert torch.equal(loaded.decode(ref.expected[0]), ref.decode(ref.expected[0]))


def our_lines(stderr: str) -> list[str]:
    """stderr without transformers' progress bar of loading weights."""
    return [line for line in stderr.strip().splitlines() if "Loading weights" not in line]


def original(ref, tmp_path, **options) -> str:
    return write_original(ref, tmp_path / "models" / "Lumina-mGPT-2.0", **options)


# ----------------------------------------------------------------------------------------------------
# Every front door


def test_the_published_folder_loads_through_every_front_door(ref, tmp_path, monkeypatch):
    folder = original(ref, tmp_path)
    assert registry.detect(folder).name == "lumina2"
    check(load_model(folder, device="cpu"), ref)

    pipe = quiet(ZipARPipeline.from_pretrained(folder, device="cpu"))
    assert pipe.config.model_options["target_size"] == 768
    # the tiny sizes are not its 768-px training sizes
    pipe.register_to_config(model_options={**pipe.config.model_options, "target_size": None})
    out = pipe(**CALL, guidance_scale=7.0, mode="fixed", window=2, temperature=0, output_type="codes")
    assert out.codes.tolist() == ref.expected[1].tolist()

    movqgan_file(ref.vqgan, str(tmp_path / "models" / "movqgan_270M.ckpt"))  # a loose copy beside: not a model
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path / "models"))
    assert glue.list_model_entries() == ["Lumina-mGPT-2.0"]  # the folder once, its MoVQGAN never
    handle, = ZipARModelLoader().load("Lumina-mGPT-2.0", "fp32")
    check(handle.adapter, ref)

    # the command line: tests below (it loads the folder, then refuses what the model cannot make); a 768-px image
    # of this tiny model takes 12 s on CPU (96 x 96 tokens, MoVQGAN attention over 9,216 positions), too long here


def test_zipar_convert_writes_transformers_layout_that_loads_back(ref, tmp_path, capsys):
    src, dst = original(ref, tmp_path), tmp_path / "converted"
    assert main(["convert", src, str(dst)]) == 0
    files = sorted(os.listdir(dst))
    assert "movqgan.safetensors" in files and "tokenizer.json" in files and "config.json" in files
    assert not any(f.endswith((".ckpt", ".bin")) for f in files)  # no pickle left to convert again
    assert registry.detect(str(dst)).name == "lumina2"
    check(load_model(str(dst), device="cpu"), ref)
    from transformers import ChameleonForConditionalGeneration

    plain, info = ChameleonForConditionalGeneration.from_pretrained(dst, output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("model.vqmodel.") for k in info["missing_keys"])
    assert torch.equal(plain.model.layers[1].self_attn.q_norm.weight, ref.model.model.layers[1].self_attn.q_norm.weight)


def test_a_saved_pipeline_loads_back(ref, tmp_path):
    ZipARPipeline.from_adapter(ref, target_size=None).save_pretrained(tmp_path / "pipe")
    with open(tmp_path / "pipe" / "model_index.json") as f:
        assert json.load(f)["vqvae"] == ["zipar.pipelines.components", "MoVQGANModel"]
    pipe = quiet(ZipARPipeline.from_pretrained(tmp_path / "pipe"))
    out = pipe(**CALL, guidance_scale=7.0, mode="ntp", temperature=0, output_type="np")
    assert out.codes.tolist() == ref.expected[0].tolist() and out.images.shape == (2, 32, 64, 3)


@pytest.mark.parametrize("where", ["inside", "beside", "given"])
def test_the_movqgan_file_is_found_where_it_is_put(ref, tmp_path, where):
    folder = original(ref, tmp_path, movqgan=None if where == "given" else where)
    given = movqgan_file(ref.vqgan, str(tmp_path / "elsewhere" / "movqgan_270M.ckpt")) if where == "given" else None
    loaded = load_model(folder, device="cpu", **({"vqgan": os.path.dirname(given)} if given else {}))
    assert all(torch.equal(a, b) for a, b in zip(loaded.vqgan.state_dict().values(), ref.vqgan.state_dict().values()))


# ----------------------------------------------------------------------------------------------------
# Bad input: one line naming the missing part and where it is published


def test_a_folder_without_movqgan_names_the_file_and_where_it_is_published(ref, tmp_path, capsys):
    folder = original(ref, tmp_path, movqgan=None)
    with pytest.raises(CheckpointError, match=r"MoVQGAN 270M: movqgan_270M\.ckpt from huggingface\.co/ai-forever/"
                                              r"MoVQGAN is not in the folder.*vqgan="):
        load_model(folder, device="cpu")
    args = ["generate", "--model", folder, "--prompt", "a cat", "--device", "cpu", "-o", str(tmp_path / "x.png")]
    assert main(args) == 2
    err = our_lines(capsys.readouterr().err)
    assert len(err) == 1 and "movqgan_270M.ckpt" in err[0] and "ai-forever/MoVQGAN" in err[0] and "--vqgan" in err[0]


def test_a_truncated_shard_names_the_file_and_the_download(ref, tmp_path):
    folder = original(ref, tmp_path)
    shard = os.path.join(folder, "model-00002-of-00002.safetensors")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(CheckpointError,
                       match=r"model-00002-of-00002\.safetensors.*truncated.*Alpha-VLLM/Lumina-mGPT-2\.0"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("defect", ["shard missing", "tensor missing", "shape wrong"])
def test_damaged_shards_name_the_file_the_tensor_and_the_fix(ref, tmp_path, defect):
    from safetensors.torch import load_file, save_file

    folder = original(ref, tmp_path)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    key = "model.layers.1.mlp.down_proj.weight"
    path = os.path.join(folder, weight_map[key])
    if defect == "shard missing":
        os.remove(path)
    else:
        sd = load_file(path)
        sd[key] = torch.zeros(3, 5)
        if defect == "tensor missing":
            del sd[key]
        save_file(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_model(folder, device="cpu")
    message = str(info.value)
    assert weight_map[key] in message and "Alpha-VLLM/Lumina-mGPT-2.0" in message and "download" in message
    assert (key in message) == (defect != "shard missing") and ("(3, 5)" in message) == (defect == "shape wrong")


def test_a_movqgan_pickle_that_needs_more_than_weights_only_is_refused_with_a_conversion(ref, tmp_path):
    folder = original(ref, tmp_path)
    ckpt = os.path.join(folder, "movqgan", "270M", "movqgan_270M.ckpt")
    data = torch.load(ckpt, weights_only=True)
    data["optimizer"] = Image.new("RGB", (1, 1))  # an object next to the weights: unpickling it would run code
    torch.save(data, ckpt)
    with pytest.raises(CheckpointError, match=r"holds code.*convert it once.*movqgan_270M\.safetensors") as info:
        load_model(folder, device="cpu")
    exec(re.search(r'python -c "(.*)"', str(info.value)).group(1), {"__name__": "convert_once"})  # trusting it
    assert load_model(folder, device="cpu").vqgan is not None  # the twin is read, the pickle never again


def test_a_broken_movqgan_file_or_tokenizer_is_named(ref, tmp_path):
    folder = original(ref, tmp_path)
    ckpt = os.path.join(folder, "movqgan", "270M", "movqgan_270M.ckpt")
    sd = torch.load(ckpt, weights_only=True)
    del sd["decoder.up.1.block.0.conv2.weight"]
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError, match=r"movqgan_270M\.ckpt is not a complete MoVQGAN decoder: missing "
                                              r"\['decoder\.up\.1\.block\.0\.conv2\.weight'\].*ai-forever/MoVQGAN"):
        load_model(folder, device="cpu")
    shutil.rmtree(os.path.join(folder, "movqgan"))
    movqgan_file(ref.vqgan, os.path.join(folder, "movqgan_270M.ckpt"))
    os.remove(os.path.join(folder, "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json.*huggingface\.co/Alpha-VLLM/Lumina-mGPT-2\.0"):
        load_model(folder, device="cpu")


def test_a_size_that_is_no_multiple_of_32_px_is_one_line(ref, tmp_path, capsys):
    folder = original(ref, tmp_path)
    args = ["generate", "--model", folder, "--prompt", "a cat", "--height", "772", "--width", "768", "--device",
            "cpu", "-o", str(tmp_path / "x.png")]
    assert main(args) == 2
    err = our_lines(capsys.readouterr().err)  # after loading: the size is checked against the loaded model
    assert len(err) == 1 and "--height" in err[0] and "768x772" in err[0] and "multiples of 32 px" in err[0]
    assert not os.path.exists(tmp_path / "x.png")

"""Loading LlamaGen checkpoints in the official layouts, and the errors for files that are not."""
import argparse

import pytest
import torch
from helpers import T2I_PREFIX, tiny_gpt, tiny_vq
from safetensors.torch import save_file
from zipar.zipar_core.checkpoints import CheckpointError, format_key_mismatch, load_state_dict
from zipar.zipar_core.models.llamagen import (
    LlamaGenAdapter,
    LlamaGenConfig,
    LlamaGenTransformer,
    load_llamagen,
    load_llamagen_gpt,
    load_llamagen_vq,
)
from zipar.zipar_core.models.llamagen.loading import image_size_from_name, infer_gpt_config


class NotAllowed:  # an arbitrary class: weights_only loading must refuse it
    pass


def _logits(model, cols=6):
    codes = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if model.config.model_type == "c2i":
            cond = model.embed_labels(torch.tensor([1, 2]))
        else:
            cond = model.embed_captions(torch.randn(2, T2I_PREFIX, 24, generator=torch.Generator().manual_seed(1)))
        return model(cond, codes, cols)


def test_official_pt_layout_round_trip(tmp_path):
    model = tiny_gpt("c2i")
    path = tmp_path / "c2i_B_256.pt"
    # Official files: weights under "model", next to training state such as args and steps.
    torch.save({"model": model.state_dict(), "steps": 10, "args": argparse.Namespace(lr=1e-4)}, path)
    loaded = load_llamagen_gpt(path, n_head=4)
    assert loaded.config.block_size == 256 and loaded.config.num_classes == 10
    assert loaded.config.hidden_dim == model.config.hidden_dim
    assert torch.equal(_logits(loaded), _logits(model))


def test_raw_fsdp_t2i_and_prefixes_and_freqs_cis(tmp_path):
    model = tiny_gpt("t2i", n_kv_head=2)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.freqs_cis"] = torch.zeros(3, 2)  # derived state some exports carry
    sd["module.layers.0.attention.kv_cache.k_cache"] = torch.zeros(1)
    path = tmp_path / "t2i_XL_stage2_512.pt"
    torch.save(sd, path)
    loaded = load_llamagen_gpt(path, n_head=4)
    cfg = loaded.config
    assert (cfg.model_type, cfg.cls_token_num, cfg.caption_dim, cfg.kv_heads, cfg.block_size) == ("t2i", 6, 24, 2, 1024)
    assert torch.equal(_logits(loaded), _logits(model))
    with pytest.raises(CheckpointError, match="t2i"):
        load_llamagen_gpt(path, n_head=4, model_type="c2i")


def test_safetensors_and_dtype(tmp_path):
    model = tiny_gpt("c2i")
    path = tmp_path / "c2i_L_384.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_llamagen_gpt(path, n_head=4)
    assert loaded.config.block_size == 24 * 24
    assert torch.equal(_logits(loaded), _logits(model))
    half = load_llamagen_gpt(path, n_head=4, dtype=torch.bfloat16)
    assert half.tok_embeddings.weight.dtype == torch.bfloat16
    torch.testing.assert_close(_logits(half), _logits(model), rtol=0.1, atol=0.15)


def test_image_size_from_name_and_explicit():
    assert image_size_from_name("/x/c2i_L_384.pt") == 384
    assert image_size_from_name("t2i_XL_stage1_256.pt") == 256
    assert image_size_from_name("t2i_XL_stage2_512.safetensors") == 512
    assert image_size_from_name("my_model.pt") is None


def test_unknown_image_size_asks_for_it(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": tiny_gpt("c2i").state_dict()}, path)
    with pytest.raises(ValueError, match="image_size"):
        load_llamagen_gpt(path, n_head=4)
    assert load_llamagen_gpt(path, n_head=4, image_size=96).config.block_size == 36


def test_preset_inferred_from_shapes():
    for name, mt, tokens, fname in [("GPT-L", "c2i", 576, "c2i_L_384.pt"), ("GPT-XL", "t2i", 1024, "t2i_XL_stage2_512.pt"),
                                    ("GPT-3B", "c2i", 576, "weights.pt")]:
        want = LlamaGenConfig.from_preset(name, mt, tokens)
        with torch.device("meta"):
            sd = LlamaGenTransformer(want).state_dict()
        got = infer_gpt_config(sd, fname, image_size=384 if tokens == 576 else 512)
        assert got == want, (name, got)
    with pytest.raises(CheckpointError, match="not preset GPT-B"):
        infer_gpt_config(sd, "x.pt", preset="GPT-B", image_size=384)


def test_no_preset_match_asks_for_heads(tmp_path):
    path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": tiny_gpt("c2i").state_dict()}, path)
    with pytest.raises(CheckpointError, match="n_head"):
        load_llamagen_gpt(path)


def test_wrong_family_is_named(tmp_path):
    vq_path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": tiny_vq().state_dict()}, vq_path)
    gpt_path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": tiny_gpt("c2i").state_dict()}, gpt_path)
    with pytest.raises(CheckpointError, match=r"looks like a VQ tokenizer checkpoint.*VQ checkpoint instead"):
        load_llamagen_gpt(vq_path, n_head=4)
    with pytest.raises(CheckpointError, match=r"looks like a LlamaGen GPT checkpoint \(c2i\).*GPT checkpoint instead"):
        load_llamagen_vq(gpt_path)
    hf = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(4, 2), "lm_head.weight": torch.zeros(4, 2)}, str(hf))
    with pytest.raises(CheckpointError, match="transformers"):
        load_llamagen_gpt(hf)


def test_truncated_files_raise_checkpoint_error(tmp_path):
    sd = tiny_gpt("c2i").state_dict()
    for name, save in [("c2i_B_256.pt", lambda p: torch.save({"model": sd}, p)),
                       ("c2i_B_256.safetensors", lambda p: save_file(sd, str(p)))]:
        path = tmp_path / name
        save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"re-download") as err:
            load_llamagen_gpt(path, n_head=4)
        assert name in str(err.value)
    empty = tmp_path / "vq_ds16_c2i.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_llamagen_vq(empty)
    page = tmp_path / "vq_ds16_t2i.pt"
    page.write_bytes(b"<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(CheckpointError, match="HTML"):
        load_llamagen_vq(page)
    with pytest.raises(FileNotFoundError):
        load_llamagen_vq(tmp_path / "missing.pt")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": tiny_gpt("c2i").state_dict(), "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="holds code .*NotAllowed.* refused"):
        load_state_dict(path)


class RunsCode:
    """What a malicious checkpoint carries: unpickling it would call os.system."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_a_zip_pickle_that_would_run_code_is_refused_as_code_not_as_corrupt(tmp_path):
    path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": tiny_gpt("c2i").state_dict(), "x": RunsCode()}, path)  # torch's zip format
    assert path.read_bytes()[:2] == b"PK"
    for read in (load_state_dict, lambda p: load_state_dict(p, mmap=True)):
        with pytest.raises(CheckpointError) as err:
            read(path)
        msg = str(err.value)
        assert "holds code (posix.system" in msg or "holds code (os.system" in msg or "holds code (nt.system" in msg
        assert "refused" in msg and "corrupt" not in msg and "re-download" not in msg


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = tiny_gpt("c2i").state_dict()
    del sd["layers.1.ffn_norm.weight"]
    sd["layers.0.attention.bogus"] = torch.zeros(1)
    path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_llamagen_gpt(path, n_head=4)
    msg = str(err.value)
    assert "1 missing key(s) ['layers.1.ffn_norm.weight']" in msg
    assert "1 unexpected key(s) ['layers.0.attention.bogus']" in msg
    assert "c2i_B_256.pt" in msg
    assert "(12 in all)" in format_key_mismatch([f"k{i}" for i in range(12)], [])


def test_vq_round_trip_and_shape_mismatch(tmp_path):
    vq = tiny_vq()
    sd = vq.state_dict()
    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": {k: v for k, v in sd.items() if k != "quantize.codebook_used"}}, path)
    loaded = load_llamagen_vq(path)
    cfg = loaded.config
    assert (cfg.codebook_size, cfg.codebook_embed_dim, cfg.ch, tuple(cfg.ch_mult), cfg.z_channels,
            cfg.num_res_blocks) == (96, 8, 32, (1, 2), 16, 1)
    codes = torch.randint(0, 96, (1, 3, 4))
    with torch.no_grad():
        assert torch.equal(loaded.decode_codes(codes), vq.decode_codes(codes))
    sd["post_quant_conv.weight"] = torch.zeros(16, 4, 1, 1)
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="shape mismatch.*post_quant_conv.weight"):
        load_llamagen_vq(path)


def test_load_llamagen_builds_a_working_adapter(tmp_path):
    gpt, vq = tiny_gpt("c2i"), tiny_vq()
    torch.save({"model": gpt.state_dict()}, tmp_path / "c2i_B_96.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    with pytest.raises(CheckpointError, match="n_head"):
        load_llamagen(tmp_path / "c2i_B_96.pt", tmp_path / "vq_ds16_c2i.pt", image_size=96)
    ad = load_llamagen(tmp_path / "c2i_B_96.pt", tmp_path / "vq_ds16_c2i.pt", image_size=96, n_head=4)
    assert isinstance(ad, LlamaGenAdapter)
    assert ad.default_grid == (6, 6)
    cond = ad.prepare(class_labels=[3], guidance_scale=2.0)
    cache = ad.new_cache(cond, cond.layout.num_slots)
    logits = ad.prefill(cond, cache, torch.ones(2, 1, 1, dtype=torch.bool))
    assert logits.shape == (2, 96) and logits.dtype == torch.float32
    assert ad.decode(torch.zeros(1, 6, 6, dtype=torch.long)).shape == (1, 3, 12, 12)

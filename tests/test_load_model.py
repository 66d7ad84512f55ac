"""load_model: the family is detected from what is on disk; wrong inputs say what to give instead."""
import json

import pytest
import torch
from helpers import tiny_gpt, tiny_vq
from zipar.zipar_core.models import load_model
from zipar.zipar_core.models.llamagen import LlamaGenAdapter, find_llamagen_files


@pytest.fixture()
def llamagen_folder(tmp_path):
    torch.save({"model": tiny_gpt("c2i", block_size=36).state_dict()}, tmp_path / "c2i_B_96.pt")
    torch.save({"model": tiny_vq().state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    return tmp_path


def test_llamagen_folder_and_file(llamagen_folder):
    for target in (llamagen_folder, llamagen_folder / "c2i_B_96.pt"):
        model = load_model(target, device="cpu", n_head=4, image_size=96)
        assert isinstance(model, LlamaGenAdapter) and model.family == "llamagen"
        assert model.default_grid == (6, 6) and model.device.type == "cpu"
    model = load_model(llamagen_folder / "c2i_B_96.pt", torch_dtype=torch.float64, device="cpu", n_head=4, image_size=96)
    assert model.dtype == torch.float64


def test_bad_locations_are_named(tmp_path, llamagen_folder):
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no checkpoint files"):
        find_llamagen_files(str(tmp_path / "empty"))
    (llamagen_folder / "vq_ds16_c2i.pt").unlink()
    with pytest.raises(ValueError, match="no VQ tokenizer"):
        load_model(llamagen_folder / "c2i_B_96.pt", n_head=4, image_size=96)


def test_unknown_transformers_family_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="unsupported model type 'llama'"):
        load_model(tmp_path)


def test_a_llamagen_folder_is_read_by_content_not_by_name(tmp_path):
    """gpt.pt, vq.pt and an unrelated ref.pt: the GPT and the VQ are told apart by their keys, ref.pt passed over."""
    gpt, vq = tiny_gpt("c2i", block_size=36), tiny_vq()
    torch.save({"model": gpt.state_dict()}, tmp_path / "gpt.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq.pt")
    torch.save({"model.embed_tokens.weight": torch.zeros(4, 2), "lm_head.weight": torch.zeros(4, 2)},
               tmp_path / "ref.pt")
    assert find_llamagen_files(str(tmp_path))[:2] == (str(tmp_path / "gpt.pt"), str(tmp_path / "vq.pt"))
    model = load_model(tmp_path, device="cpu", n_head=4, image_size=96)
    assert isinstance(model, LlamaGenAdapter) and model.vq is not None
    # names that say nothing: still found by content (the VQ beside a GPT file too)
    (tmp_path / "vq.pt").rename(tmp_path / "tokenizer.pt")
    assert find_llamagen_files(str(tmp_path))[1] == str(tmp_path / "tokenizer.pt")
    assert load_model(tmp_path / "gpt.pt", device="cpu", n_head=4, image_size=96).vq is not None
    # two GPTs: the error lists every checkpoint with what it holds
    torch.save({"model": gpt.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError) as err:
        find_llamagen_files(str(tmp_path))
    msg = str(err.value)
    assert "gpt.pt: a LlamaGen GPT" in msg and "other.pt: a LlamaGen GPT" in msg
    assert "ref.pt: a transformers (Hugging Face) language-model state dict" in msg


def test_configuration_only_loading_reads_no_weights(tmp_path):
    """device="meta": the model's configuration from the files' headers, the same checks, no weights."""
    from zipar.zipar_core.models.llamagen import load_llamagen

    torch.save({"model": tiny_gpt("c2i", block_size=36).state_dict()}, tmp_path / "c2i_B_96.pt")
    torch.save({"model": tiny_vq().state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    meta = load_llamagen(tmp_path / "c2i_B_96.pt", tmp_path / "vq_ds16_c2i.pt", device="meta", n_head=4, image_size=96)
    real = load_llamagen(tmp_path / "c2i_B_96.pt", tmp_path / "vq_ds16_c2i.pt", n_head=4, image_size=96)
    assert meta.device.type == "meta" and meta.gpt.config == real.gpt.config and meta.default_grid == (6, 6)
    assert meta.check(class_labels=[9]).rows == 6
    with pytest.raises(ValueError, match=r"class label\(s\) \[10\] out of range"):
        meta.check(class_labels=[10])

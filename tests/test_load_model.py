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

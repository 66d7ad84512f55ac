"""What a newcomer, a ComfyUI user and a check against the original code tripped on (issue 20): one test (or a few)
per finding, each failing on the code before the fix. The Lumina-mGPT BOS and the Janus-1.3B chat roles are tested
with their families (tests/test_lumina.py, tests/test_published_layouts.py)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from zipar.cli import main

# -- 3. "demo" is the embedded demo model in every face, whatever folders sit in the working directory -----------

def test_the_demo_name_wins_over_a_folder_called_demo(tmp_path, monkeypatch, capsys):
    """README's own example writes into demo/; afterwards --model demo and --from-png demo/zipar-1.png must work."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", "demo", "--class-label", "3", "-n", "2", "-o", "demo/", "--device", "cpu"]) == 0
    assert os.path.isdir("demo")
    assert main(["generate", "--model", "demo", "--class-label", "4", "-o", "again.png", "--device", "cpu"]) == 0
    assert "the embedded demo model (for the folder named demo here, write ./demo)" in capsys.readouterr().err
    first = sorted(os.listdir("demo"))[1]
    assert main(["generate", "--from-png", f"demo/{first}", "-o", "copy.png", "--device", "cpu"]) == 0
    assert (np.asarray(Image.open("copy.png")) == np.asarray(Image.open(f"demo/{first}"))).all()


def test_the_demo_name_in_python_the_pipeline_and_convert(tmp_path, monkeypatch, capsys):
    from zipar import ZipARPipeline
    from zipar.zipar_core.models import load_model

    monkeypatch.chdir(tmp_path)
    os.mkdir("demo")  # an empty folder called demo is no model, and hides nothing
    adapter = load_model("demo", device="cpu")
    assert adapter.family == "llamagen" and adapter.variant == "demo"
    pipe = ZipARPipeline.from_pretrained("demo")
    out = pipe(class_labels=[1, 2], generator=[torch.Generator().manual_seed(s) for s in (0, 1)], output_type="codes")
    assert out.codes.shape == (2, 16, 16) and out.settings["window"] == 4  # the demo's own defaults
    assert main(["convert", "demo", "converted"]) == 0
    assert sorted(os.listdir("converted")) == ["c2i_demo_32.safetensors", "vq_demo.safetensors"]
    again = load_model("converted", device="cpu")
    assert again.variant == "demo"
    assert torch.equal(next(again.gpt.parameters()), next(adapter.gpt.parameters()))


# -- 4. files get the permissions the user's umask gives (a FID evaluator under another account reads the set) --

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_images_and_sets_are_written_with_the_umask_s_permissions(tmp_path, umask_022):
    assert main(["generate", "--model", "demo", "--class-label", "1", "-o", str(tmp_path / "one.png"),
                 "--device", "cpu"]) == 0
    assert main(["sample", "--model", "demo", "--classes", "0-1", "--out", str(tmp_path / "set"), "--device", "cpu",
                 "--window", "16"]) == 0
    written = [tmp_path / "one.png", *sorted((tmp_path / "set").iterdir())]
    assert {p.name for p in written} >= {"one.png", "000000.png", "000001.png", "samples.npz", "zipar_sample.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written if p.is_file()} == \
        {p.name: "0o644" for p in written if p.is_file()}


# -- 5. a full disk: checked before a batch is decoded; named, with the fix; nothing half-made left ---------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from helpers import tiny_llamagen_pipeline_folder

    return tiny_llamagen_pipeline_folder(tmp_path_factory.mktemp("pipe"))


def sample(model_dir, out, *extra):
    return main(["sample", "--model", str(model_dir), "--classes", "0-1", "--images-per-prompt", "2", "--out", str(out),
                 "--batch-size", "2", "--device", "cpu", *extra])


def leftovers(folder):
    """What a failed run must not leave: images, temporary files, claims."""
    return sorted(p for p in os.listdir(folder) if p.endswith((".png", ".tmp", ".npz")) or p.startswith(".claims"))


def test_a_batch_that_cannot_fit_on_the_disk_is_refused_before_it_is_decoded(model_dir, tmp_path, capsys, monkeypatch):
    from zipar.pipelines import pipeline_zipar
    from zipar.zipar_core import files

    decoded = []
    monkeypatch.setattr(files, "free_bytes", lambda folder: 10_000)  # far less than one 64x64 PNG's bound
    monkeypatch.setattr(pipeline_zipar, "generate", lambda *a, **k: decoded.append(1))
    assert sample(model_dir, tmp_path / "set") == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'set'}: batch 0 (2 images) needs up to" in err and "MiB free; free some space" in err
    assert decoded == [] and leftovers(tmp_path / "set") == []


def test_a_disk_that_fills_while_writing_names_the_file_and_leaves_nothing_half_made(model_dir, tmp_path, capsys,
                                                                                     monkeypatch):
    import errno

    from PIL import Image as PILImage

    saved = PILImage.Image.save

    def fill_up(image, fp, *a, **k):  # the second image of the set finds the disk full
        if fill_up.calls == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        fill_up.calls += 1
        return saved(image, fp, *a, **k)
    fill_up.calls = 0
    monkeypatch.setattr(PILImage.Image, "save", fill_up)
    assert sample(model_dir, tmp_path / "set") == 2
    err = capsys.readouterr().err
    assert f"no space left on the device to write {tmp_path / 'set' / '000001.png'}: free some space" in err
    assert leftovers(tmp_path / "set") == ["000000.png"]  # the image written before; no temporary file, no claim
    monkeypatch.setattr(PILImage.Image, "save", saved)
    assert sample(model_dir, tmp_path / "set") == 0  # the same command finishes the set
    assert leftovers(tmp_path / "set") == [f"00000{i}.png" for i in range(4)] + ["samples.npz"]


def test_a_claim_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    import errno
    import json

    from zipar.cli.claims import Claims

    claims = Claims(str(tmp_path))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(OSError):
        claims.take(7)
    assert os.listdir(claims.dir) == [] and claims.held == set()

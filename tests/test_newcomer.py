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


# -- 7. a window wider than the grid is refused by every command, before loading ------------------------------------

@pytest.mark.parametrize("argv", [["demo", "--windows", "17"], ["demo", "--zipar-sjd", "20"],
                                  ["bench", "--grid", "16", "--windows", "4", "17"], ["steps", "--cols", "4",
                                                                                     "--windows", "8"]])
def test_every_command_refuses_a_window_wider_than_the_grid_before_loading(argv, capsys, monkeypatch):
    from zipar.zipar_core.models import registry

    def no_model(*a, **k):
        raise AssertionError("a model was built before the windows were checked")
    monkeypatch.setattr(registry, "build_tiny", no_model)
    monkeypatch.setattr(registry, "adapter_class", no_model)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wider than the grid" in err[0] and f"{argv[-2] if argv[-2].startswith('--') else '--windows'}" in err[0]


# -- 8. the ComfyUI sampler: -1 is the model's default, nothing else is ---------------------------------------------

def test_sampler_widgets_have_one_rule_for_the_model_default():
    from zipar.nodes.sampler import chosen_settings

    base = dict(mode="fixed", temperature=1.0, top_p=1.0, paper_first_row=False)
    given = chosen_settings(window=-1, guidance_scale=-1, top_k=-1, draft_length=-1, **base)
    assert [given[k] for k in ("window", "guidance_scale", "top_k", "draft_length")] == [None] * 4
    explicit = chosen_settings(window=3, guidance_scale=0.0, top_k=0, draft_length=2, **base)
    assert [explicit[k] for k in ("window", "guidance_scale", "top_k", "draft_length")] == [3, 0.0, 0, 2]
    for name in ("window", "draft_length"):  # 0 used to mean "the default" in silence
        with pytest.raises(ValueError, match=f"{name} 0 is not allowed; use -1 for the model's default, or a value >= 1"):
            chosen_settings(**{**dict(window=-1, guidance_scale=-1, top_k=-1, draft_length=-1), name: 0}, **base)


def test_sjd_stats_name_no_window():
    from zipar.nodes.sampler import stats_text
    from zipar.zipar_core.config import resolve
    from zipar.zipar_core.layout import TokenLayout
    from zipar.zipar_core.sampler import DecodeStats

    stats = DecodeStats(passes=40, tokens=256, chain_steps=40, drafts_proposed=300, drafts_accepted=216)
    layout = TokenLayout(16, 16, prefix=1)
    text = stats_text(resolve(None, 16, {"mode": "sjd", "window": 4}, warn=False), layout, stats, 256)
    assert text.startswith("ZipAR sjd: 40 forward passes") and "window" not in text
    assert "window 4" in stats_text(resolve(None, 16, {"mode": "zipar_sjd", "window": 4}), layout, stats, 256)


# -- 10. what a command ignores or will take long for, it says --------------------------------------------------------

def test_a_setting_the_mode_ignores_is_one_warning_line(model_dir, tmp_path, capsys, monkeypatch):
    from zipar.zipar_core import config

    monkeypatch.setattr(config, "_WARNED", set())  # what earlier tests said already
    assert main(["generate", "--model", str(model_dir), "--class-label", "1", "--mode", "ntp", "--window", "3",
                 "-o", str(tmp_path / "a.png"), "--device", "cpu"]) == 0
    said = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert said == ["zipar generate: warning: --window 3 has no effect in mode ntp"]


def test_many_images_are_announced_timed_and_named_to_sort(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(model_dir), "--class-label", "1", "-n", "12", "--batch-size", "5",
                 "-o", str(tmp_path / "x.png"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"12 images in 3 batches of 5 ({tmp_path / 'x-00.png'} .. {tmp_path / 'x-11.png'})" in err
    assert "batch 1 of 3: " in err and "at this rate the rest takes about" in err
    assert sorted(os.listdir(tmp_path)) == [f"x-{i:02d}.png" for i in range(12)]


# -- 12. help texts and messages ---------------------------------------------------------------------------------------

def test_help_texts_say_what_holds_for_every_model(capsys):
    from zipar.cli import build_parser

    def help_of(command):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        return capsys.readouterr().out

    generate = " ".join(help_of("generate").split())
    assert "in the model's own range (LlamaGen c2i: ImageNet 0..999; the demo model" in generate
    convert = help_of("convert")
    assert "**" not in convert and "``" not in convert
    bench = " ".join(help_of("bench").split())
    for flag in ("--grid", "--reps", "--windows", "--batch-size"):
        assert bench.split(flag, 2)[-1].split("--")[0].strip(), f"{flag} has no help"
    assert "{tiny,GPT-B" in bench


def test_a_bad_value_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--preset", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "invalid choice: 'nope' (choose from 'tiny', 'GPT-B'" in err[0] and err[0].endswith("(see zipar bench --help)")


def test_counts_and_class_ranges_read_right(model_dir, tmp_path, capsys):
    from zipar.cli.sample import parse_classes

    with pytest.raises(ValueError, match="--classes: 5-2 is reversed; write 2-5"):
        parse_classes("5-2")
    assert main(["sample", "--model", str(model_dir), "--classes", "3", "--out", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 image in the set" in err and "wrote 1 image (1 this run)" in err and "made 1 image" in err

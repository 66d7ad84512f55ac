"""Sample sets and command-line runs a researcher can trust (issue 16): check first, record everything, lose
nothing. One test (or a few) per finding of the issue, each failing on the code before it; the command line
through its real entry point (``python -m zipar.cli``) in a subprocess where the finding is about the process
(exit codes, Ctrl-C, what is printed, how long it takes), through ``main()`` in this process elsewhere (the
same code, without 5-20 s of imports per run).

Models: a tiny class-conditional LlamaGen (10 classes, 4x4 tokens, 64x64 px) saved as a pipeline folder and
as LlamaGen release files; the embedded demo model for the subprocess runs (``--model demo``).
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import tiny_llamagen, tiny_llamagen_pipeline_folder
from PIL import Image
from zipar import ZipARPipeline
from zipar.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ["--window", "2", "--cfg", "1.5", "--top-k", "20", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_llamagen_pipeline_folder(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
    """LlamaGen release files: c2i_B_64.pt (matches no preset: needs --n-head 4) and vq_ds16_c2i.pt beside it."""
    folder = tmp_path_factory.mktemp("files")
    gpt, vq = tiny_llamagen("c2i")
    torch.save({"model": gpt.state_dict()}, folder / "c2i_B_64.pt")
    torch.save({"model": vq.state_dict()}, folder / "vq_ds16_c2i.pt")
    return folder


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the weights start loading (a check that must come first did not)."""
    from zipar.cli import source

    def refuse(*a, **k):
        raise AssertionError("the weights were loaded before the arguments were checked")
    monkeypatch.setattr(source, "load_pipeline", refuse)


class Spy:
    """Counts ZipARPipeline calls and the seeds of each (the batches the command line decodes)."""

    def __init__(self, monkeypatch):
        self.batches = []
        original = ZipARPipeline.__call__
        spy = self

        def call(pipe, *args, generator=None, **kwargs):
            spy.batches.append([g.initial_seed() for g in generator])
            return original(pipe, *args, generator=generator, **kwargs)
        monkeypatch.setattr(ZipARPipeline, "__call__", call)


def sample(model, out, *extra, classes="0-4", per="2", batch="2"):
    return main(["sample", "--model", str(model), "--classes", classes, "--images-per-prompt", per, "--out", str(out),
                 "--batch-size", batch, "--seed", "100", *SETTINGS, *extra])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def meta_of(path):
    return json.loads(Image.open(path).text["zipar"])


# -- subprocesses: the real entry point -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """An environment whose `python -m zipar.cli` is this checkout (installed or not)."""
    path = tmp_path_factory.mktemp("path")
    os.symlink(ROOT, path / "zipar")
    return {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}


def cli(env, *args, timeout=240, **kw):
    return subprocess.run([sys.executable, "-m", "zipar.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith(("usage:", " "))]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_non_finite_and_zero_numbers_are_refused_by_the_command_line(cli_env, tmp_path):
    """`--temperature nan` silently gave constant codes; `demo --batch-size 0` was a ZeroDivisionError."""
    for args, want in ((["generate", "--model", "demo", "--class-label", "1", "--temperature", "nan"],
                        "--temperature: must be a finite number, got nan"),
                       (["sample", "--model", "demo", "--classes", "0", "--out", str(tmp_path / "s"), "--cfg", "inf"],
                        "--cfg/--guidance-scale: must be a finite number, got inf"),
                       (["demo", "--batch-size", "0"], "--batch-size: must be >= 1, got 0")):
        assert want in one_line_error(cli(cli_env, *args))
    assert not (tmp_path / "s").exists()


def test_a_missing_local_path_and_an_unreachable_hub_fail_at_once_in_one_line(cli_env, tmp_path):
    """A missing path went to the hub (47 s of retries, then "Repo id must be in the form..."); an offline hub id
    ended in an OSError traceback."""
    t = time.perf_counter()
    line = one_line_error(cli(cli_env, "generate", "--model", str(tmp_path / "no" / "such-model"), "--class-label", "1"))
    assert "no such file or folder" in line and "such-model" in line and "Repo id" not in line
    env = {**cli_env, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    line = one_line_error(cli({**env, "HF_HUB_OFFLINE": "1"}, "generate", "--model", "someone/some-model",
                              "--class-label", "1"))
    assert "could not reach the Hugging Face hub" in line and "local folder" in line
    no_network = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: refused at once
    line = one_line_error(cli(no_network, "sample", "--model", "someone/some-model", "--classes", "0", "--out",
                              str(tmp_path / "s")))
    assert "could not reach the Hugging Face hub" in line and "no connection" in line
    assert time.perf_counter() - t < 60  # no minute of retries (each run imports no torch)
    assert not (tmp_path / "s").exists()


def _unwritable_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return folder  # the platform honours it
    (folder / "probe").unlink()
    folder.chmod(0o755)
    for fallback in ("/sys/kernel", "/proc/self"):  # root ignores modes; these refuse even root
        if os.path.isdir(fallback) and not _can_create(fallback):
            return fallback
    pytest.skip("no folder on this platform refuses writes")


def _can_create(folder):
    try:
        with open(os.path.join(folder, ".zipar-probe"), "w"):
            pass
    except OSError:
        return False
    os.unlink(os.path.join(folder, ".zipar-probe"))
    return True


def test_a_read_only_output_folder_is_refused_before_the_model_loads(cli_env, tmp_path):
    """Output paths gave tracebacks after the work was done."""
    ro = _unwritable_folder(tmp_path)
    t = time.perf_counter()
    proc = cli(cli_env, "sample", "--model", "demo", "--classes", "0-1", "--out", os.path.join(ro, "set"))
    line = one_line_error(proc)
    assert line.startswith("zipar sample: error: --out: cannot ") and "set" in line
    line = one_line_error(cli(cli_env, "generate", "--model", "demo", "--class-label", "1", "-o",
                              os.path.join(ro, "x.png")))
    assert "-o/--output: cannot write in" in line
    assert "images in the set" not in proc.stderr  # refused before looking at the work, let alone loading
    assert time.perf_counter() - t < 200


def test_ctrl_c_is_one_line_exit_130_and_the_set_resumes(cli_env, tmp_path):
    """Ctrl-C printed a 62-line traceback."""
    out = tmp_path / "set"
    args = ["sample", "--model", "demo", "--classes", "0-9", "--images-per-prompt", "2", "--batch-size", "1",
            "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "zipar.cli", *args], env=cli_env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(out.glob("0*.png")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = [x for x in err.splitlines() if x.strip()][-1]
    assert last.startswith("zipar sample: interrupted: ") and "rerun the same command to resume" in last
    assert not list(out.glob(".*.tmp")) and not (out / ".claims").exists()
    first = {p.name for p in out.glob("0*.png")}
    assert 1 <= len(first) < 20
    assert main(args) == 0  # the same command finishes the set, making only what is missing
    written = [i for f in out.glob("log-*.jsonl") for line in f.read_text().splitlines()
               for i in json.loads(line)["indices"]]
    assert sorted(written) == list(range(20))
    assert np.load(out / "samples.npz")["arr_0"].shape == (20, 32, 32, 3)


# -- a set's identity: everything that changes pixels --------------------------------------------------

def test_resuming_with_another_dtype_or_model_file_or_architecture_is_refused(model_dir, files_dir, tmp_path, capsys):
    """A set's identity left out the dtype, the VQ file, n_head / image size and the full model path."""
    assert sample(model_dir, tmp_path / "a", "--dtype", "bfloat16", classes="0", per="1", batch="1") == 0
    capsys.readouterr()
    assert sample(model_dir, tmp_path / "a", "--dtype", "float32", classes="0", per="1", batch="1") == 2
    err = capsys.readouterr().err
    assert "dtype: 'bfloat16' in the folder, 'float32' now" in err
    state = json.loads((tmp_path / "a" / "zipar_sample.json").read_text())["identity"]
    assert state["model"]["files"]["folder"] == model_dir and state["device_type"] == "cpu"
    assert {"transformer/config.json", "vqvae/diffusion_pytorch_model.safetensors"} <= set(state["model"]["files"]["files"])

    gpt = str(files_dir / "c2i_B_64.pt")
    args = ["--n-head", "4", "--image-size", "64"]
    assert sample(gpt, tmp_path / "b", *args, classes="0", per="1", batch="1") == 0
    capsys.readouterr()
    assert sample(gpt, tmp_path / "b", "--n-head", "2", "--image-size", "64", classes="0", per="1", batch="1") == 2
    err = capsys.readouterr().err
    assert "model.architecture.n_head: 4 in the folder, 2 now" in err and "model.options.n_head: 4" in err
    vq = tmp_path / "other_vq.pt"
    torch.save({"model": tiny_llamagen("c2i", seed=1)[1].state_dict()}, vq)
    assert sample(gpt, tmp_path / "b", *args, "--vq", str(vq), classes="0", per="1", batch="1") == 2
    assert "model.files.vq.path:" in capsys.readouterr().err


def test_in_reduced_precision_the_batch_layout_is_part_of_the_set(model_dir, tmp_path, capsys, monkeypatch):
    """bfloat16 tokens can depend on the batch: resume and sharding must not change images."""
    out = tmp_path / "bf16"
    assert sample(model_dir, out, "--dtype", "bfloat16", classes="0-2", per="1", batch="2") == 0
    assert json.loads((out / "zipar_sample.json").read_text())["identity"]["batch_size"] == 2
    capsys.readouterr()
    assert sample(model_dir, out, "--dtype", "bfloat16", classes="0-2", per="1", batch="3") == 2
    assert "batch_size: 2 in the folder, 3 now" in capsys.readouterr().err
    # a lost image is made again in its own batch (indices 0 and 1 together), so it is the same image
    before = (out / "000001.png").read_bytes()
    (out / "000001.png").unlink()
    (out / "samples.npz").unlink()
    spy = Spy(monkeypatch)
    assert sample(model_dir, out, "--dtype", "bfloat16", classes="0-2", per="1", batch="2") == 0
    assert spy.batches == [[100, 101]]
    assert (out / "000001.png").read_bytes() == before
    assert meta_of(out / "000001.png")["batch"] == {"size": 2, "slot": 1, "conditions": [0, 1], "seeds": [100, 101],
                                                    "indices": [0, 1]}


def test_in_float32_on_cpu_any_batch_size_resumes_the_set(model_dir, tmp_path, capsys):
    out = tmp_path / "f32"
    assert sample(model_dir, out, classes="0-2", per="1", batch="2") == 0
    assert json.loads((out / "zipar_sample.json").read_text())["identity"]["batch_size"] == "any"
    image = pixels(out / "000002.png")
    (out / "000002.png").unlink()
    state = json.loads((out / "zipar_sample.json").read_text())
    state["versions"]["torch"] = "0.0"
    (out / "zipar_sample.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert sample(model_dir, out, classes="0-2", per="1", batch="3") == 0
    np.testing.assert_array_equal(pixels(out / "000002.png"), image)  # batch of 3 (alone now) = batch of 2
    assert "warning: the set was started with torch 0.0" in capsys.readouterr().err  # a warning, not a refusal


# -- checked first, nothing written by a refused run -------------------------------------------------

def test_bad_arguments_are_refused_before_anything_is_written_and_before_the_weights_load(
        model_dir, files_dir, tmp_path, capsys, monkeypatch, no_loading):
    """`--classes 0-10` on a 10-class model wrote its state file and 8 images, then failed; the corrected command
    was then refused. Same after a wrong --window. Window, classes and sizes were checked only after loading."""
    for model in (model_dir, files_dir / "c2i_B_64.pt"):
        extra = ["--n-head", "4", "--image-size", "64"] if str(model).endswith(".pt") else []
        for bad, said in ((["--classes", "0-10"], "class label(s) [10] out of range: this model has classes 0..9"),
                          (["--window", "5"], "--window 5 is larger than the grid width (4 tokens)"),
                          (["--height", "70"], "--height 70 is not a positive multiple of 16 px"),
                          (["--batch-size", "10000000"], "it would fit with --batch-size")):
            argv = ["sample", "--model", str(model), "--out", str(tmp_path / "set"), "--device", "cpu", *extra]
            argv += [] if "--classes" in bad else ["--classes", "0-9"]
            assert main(argv + bad) == 2
            assert said in capsys.readouterr().err
            assert not (tmp_path / "set").exists()  # nothing written, not even the folder
    monkeypatch.undo()
    assert sample(model_dir, tmp_path / "set", classes="0-9", per="1", batch="5") == 0  # the corrected command


def test_a_default_stated_explicitly_resumes_and_a_refusal_names_each_field(model_dir, tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["sample", "--model", model_dir, "--classes", "0-1", "--out", str(out), "--device", "cpu", "--seed", "5"]
    assert main(argv) == 0
    (out / "000001.png").unlink()
    capsys.readouterr()
    # the model's own defaults, stated: window 4 (16 clipped to the 4-token grid), guidance 2.0, top-k 0
    assert main(argv + ["--window", "4", "--cfg", "2.0", "--top-k", "0", "--mode", "fixed"]) == 0
    assert (out / "000001.png").exists()
    assert main(argv[:-1] + ["6", "--cfg", "3"]) == 2
    err = capsys.readouterr().err
    assert "seed: 5 in the folder, 6 now" in err and "settings.guidance_scale: 2.0 in the folder, 3.0 now" in err


def test_settings_that_make_no_difference_are_recorded_as_used(model_dir, tmp_path):
    """`window: 100000` in ntp: the record holds the window the schedule uses (the grid width)."""
    assert main(["generate", "--model", model_dir, "--class-label", "1", "--mode", "ntp", "--window", "100000",
                 "-o", str(tmp_path / "x.png"), "--device", "cpu"]) == 0
    assert meta_of(tmp_path / "x.png")["settings"]["window"] == 4


# -- output paths --------------------------------------------------------------------------------------

def test_output_paths_are_checked_first_and_nothing_half_written_is_left(model_dir, tmp_path, capsys, monkeypatch):
    """A parent that is a file, `-o dir/`, an unknown suffix; `-o dir/` left a full-size .tmp file."""
    (tmp_path / "file").write_text("not a folder")
    from zipar.cli import source
    real_load = source.load_pipeline
    monkeypatch.setattr(source, "load_pipeline", lambda *a, **k: pytest.fail("loaded before checking the output"))
    for out, said in ((tmp_path / "file" / "x.png", "is a file, not a folder"),
                      (tmp_path / "x.jpg", "zipar writes PNG files"),
                      (tmp_path / "file", None)):
        argv = ["generate", "--model", model_dir, "--class-label", "1", "-o", str(out), "--device", "cpu"]
        if said is None:  # -o naming an existing file is overwritten later, fine; sample --out on a file is not
            argv = ["sample", "--model", model_dir, "--classes", "1", "--out", str(out), "--device", "cpu"]
            said = "--out " + str(out) + ": is a file, not a folder"
        assert main(argv) == 2
        assert said in capsys.readouterr().err
    monkeypatch.setattr(source, "load_pipeline", real_load)
    assert main(["generate", "--model", model_dir, "--class-label", "1", "-n", "2", "-o", f"{tmp_path}/new/dir/",
                 "--device", "cpu"]) == 0
    assert sorted(os.listdir(tmp_path / "new" / "dir")) == ["zipar-0.png", "zipar-1.png"]  # no .tmp left


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    from zipar.zipar_core.files import atomic_write

    def fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 1000)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(tmp_path / "x.png"), fail)
    assert os.listdir(tmp_path) == []


def test_bench_and_evaluate_json_folders_are_made_before_the_run(tmp_path, monkeypatch):
    """`bench --json` and `evaluate --json` crashed at the end when the folder did not exist."""
    path = tmp_path / "docs" / "deep" / "bench.json"
    assert main(["bench", "--preset", "tiny", "--grid", "2", "--windows", "1", "--adaptive", "--reps", "1",
                 "--device", "cpu", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["results"]
    from zipar.demo_model import evaluate

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop
    monkeypatch.setattr(evaluate, "load_demo_model", stop)
    with pytest.raises(Stop):
        evaluate.main(["--samples", "10", "--json", str(tmp_path / "eval" / "docs" / "e.json")])
    assert (tmp_path / "eval" / "docs").is_dir()  # the run starts only once its output folder exists
    (tmp_path / "flat").write_text("")
    with pytest.raises(SystemExit) as err:
        evaluate.main(["--json", str(tmp_path / "flat" / "e.json")])
    assert err.value.code == 2


def test_evaluate_plot_without_matplotlib_is_refused_before_the_run(tmp_path, monkeypatch):
    import builtins

    from zipar.demo_model import evaluate

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(evaluate, "load_demo_model", lambda: pytest.fail("the run started"))
    with pytest.raises(SystemExit, match=r'--plot needs matplotlib: pip install "zipar\[eval\]"'):
        evaluate.main(["--samples", "10", "--plot", str(tmp_path / "p.png")])


# -- PNG metadata that reproduces the image --------------------------------------------------------------

def test_from_png_makes_the_same_image_again(model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["generate", "--model", model_dir, "--class-label", "7", "-n", "3", "--batch-size", "2", "--seed", "3",
                 "-o", str(out), "--mode", "adaptive", "--temperature", "0.9", "--top-p", "0.95", *SETTINGS]) == 0
    for i in (1, 2):
        again = tmp_path / f"again-{i}.png"
        assert main(["generate", "--from-png", str(tmp_path / f"x-{i}.png"), "-o", str(again)]) == 0
        np.testing.assert_array_equal(pixels(again), pixels(tmp_path / f"x-{i}.png"))
        a, b = meta_of(again), meta_of(tmp_path / f"x-{i}.png")
        assert a["settings"] == b["settings"] and a["seed"] == b["seed"] == 3 + i
    assert meta_of(tmp_path / "x-2.png")["batch"] == {"size": 2, "slot": 0, "conditions": [7], "seeds": [5]}


def test_from_png_in_bfloat16_decodes_the_image_in_its_own_batch(model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["generate", "--model", model_dir, "--class-label", "2", "-n", "3", "--batch-size", "3", "-o", str(out),
                 "--dtype", "bfloat16", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["generate", "--from-png", str(tmp_path / "x-1.png"), "-o", str(tmp_path / "again.png")]) == 0
    assert "decoding its batch of 3 again (slot 1)" in capsys.readouterr().err
    np.testing.assert_array_equal(pixels(tmp_path / "again.png"), pixels(tmp_path / "x-1.png"))
    assert meta_of(tmp_path / "again.png")["dtype"] == "bfloat16"


def test_png_metadata_records_the_negative_prompt_dtype_files_and_versions(tmp_path):
    """PNG metadata could not reproduce the image: no negative prompt, dtype, VQ file or versions."""
    from zipar.zipar_core.models import registry

    folder = tmp_path / "janus"
    ZipARPipeline.from_adapter(registry.build_tiny("janus")).save_pretrained(folder)
    argv = ["generate", "--model", str(folder), "--prompt", "a red cat", "--negative-prompt", "blue dog", "--cfg", "3",
            "-o", str(tmp_path / "j.png"), "--device", "cpu", "--window", "2"]
    assert main(argv) == 0
    meta = meta_of(tmp_path / "j.png")
    assert meta["condition"] == {"prompt": "a red cat", "negative_prompt": "blue dog"}
    assert meta["dtype"] == "float32" and meta["settings"]["guidance_scale"] == 3.0
    assert meta["model"]["source"] == str(folder) and meta["versions"]["torch"] == torch.__version__
    assert Image.open(tmp_path / "j.png").text["prompt"] == "a red cat"
    assert main(["generate", "--from-png", str(tmp_path / "j.png"), "-o", str(tmp_path / "k.png")]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / "k.png"), pixels(tmp_path / "j.png"))
    # a prompt set in bfloat16 (checked after loading: a transformers family), and one of its images again
    (tmp_path / "prompts.txt").write_text("a red cat\n\na blue dog\n")
    assert main(["sample", "--model", str(folder), "--prompts", str(tmp_path / "prompts.txt"), "--images-per-prompt",
                 "2", "--batch-size", "3", "--negative-prompt", "lowres", "--dtype", "bfloat16", "--out",
                 str(tmp_path / "set"), "--device", "cpu"]) == 0
    meta = meta_of(tmp_path / "set" / "000002.png")
    assert meta["condition"] == {"prompt": "a blue dog", "negative_prompt": "lowres"} and meta["index"] == 2
    assert meta["batch"]["conditions"] == ["a red cat", "a red cat", "a blue dog"] and meta["batch"]["slot"] == 2
    assert main(["generate", "--from-png", str(tmp_path / "set" / "000002.png"), "-o", str(tmp_path / "again.png")]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / "again.png"), pixels(tmp_path / "set" / "000002.png"))

    gpt, vq = tiny_llamagen("c2i")
    torch.save({"model": gpt.state_dict()}, tmp_path / "c2i_B_64.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "tok.pt")
    assert main(["generate", "--model", str(tmp_path / "c2i_B_64.pt"), "--n-head", "4", "--image-size", "64",
                 "--class-label", "1", "-o", str(tmp_path / "l.png"), "--device", "cpu"]) == 0
    model = meta_of(tmp_path / "l.png")["model"]
    assert model["vq"] == str(tmp_path / "tok.pt") and model["options"] == {"n_head": 4, "image_size": 64}


# -- memory ------------------------------------------------------------------------------------------------

def test_generate_decodes_in_batches_and_refuses_what_cannot_fit(model_dir, tmp_path, capsys, monkeypatch):
    """`-n 100000` died in a raw allocation traceback; generate had no batch size; nothing estimated memory."""
    spy = Spy(monkeypatch)
    assert main(["generate", "--model", model_dir, "--class-label", "1", "-n", "5", "--batch-size", "2", "-o",
                 str(tmp_path / "x.png"), "--device", "cpu"]) == 0
    assert spy.batches == [[0, 1], [2, 3], [4]]
    assert "memory plan: " in capsys.readouterr().err
    assert main(["generate", "--model", model_dir, "--class-label", "1", "-n", "10000000", "--batch-size", "10000000",
                 "-o", str(tmp_path / "y.png"), "--device", "cpu"]) == 2  # ~340 GB of cache
    err = capsys.readouterr().err
    assert "a batch of 10000000 images needs" in err and "KV cache" in err and "it would fit with --batch-size" in err
    assert not list(tmp_path.glob("y*.png"))


def test_memory_plan_counts_the_cache_exactly(model_dir):
    from zipar.zipar_core import ZipARConfig
    from zipar.zipar_core.models.plan_builders import plan_adapter

    pipe = ZipARPipeline.from_pretrained(model_dir)
    adapter = pipe.build_adapter()
    request = adapter.check(class_labels=[1])
    plan = plan_adapter(adapter, request, ZipARConfig(window=2, guidance_scale=2.0), batch=3, device="cpu")
    cond = adapter.prepare(class_labels=[1, 2, 3], guidance_scale=2.0)
    cache = adapter.new_cache(cond, cond.layout.num_slots + 1)
    assert plan.kv_cache == sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert plan.activations > 0 and plan.total > plan.kv_cache + plan.weights


def test_out_of_memory_says_what_to_lower(model_dir, tmp_path, capsys, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    monkeypatch.setattr(ZipARPipeline, "__call__", oom)
    assert main(["sample", "--model", model_dir, "--classes", "0-3", "--out", str(tmp_path / "s"), "--batch-size",
                 "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "out of memory on cpu decoding a batch of 4 images (planned" in err and "lower --batch-size" in err


# -- errors in the command line's words ---------------------------------------------------------------------

def test_command_line_errors_name_flags_not_python_arguments(files_dir, tmp_path, capsys):
    """CLI errors gave Python advice (`pass n_head=`, `vq_path=`) where the flag is --n-head, --vq."""
    gpt = str(files_dir / "c2i_B_64.pt")
    assert main(["generate", "--model", gpt, "--image-size", "64", "--class-label", "1", "-o", str(tmp_path / "x.png"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "with --n-head to load it" in err and "n_head=" not in err
    alone = tmp_path / "alone"
    alone.mkdir()
    os.symlink(gpt, alone / "c2i_B_64.pt")
    assert main(["generate", "--model", str(alone / "c2i_B_64.pt"), "--n-head", "4", "--image-size", "64",
                 "--class-label", "1", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "give it with --vq" in err and "vq_path" not in err
    t2i, _ = tiny_llamagen("t2i")
    torch.save({"model": t2i.state_dict()}, alone / "t2i_B_64.pt")
    assert main(["generate", "--model", str(alone / "t2i_B_64.pt"), "--vq", str(files_dir / "vq_ds16_c2i.pt"),
                 "--n-head", "4", "--image-size", "64", "--prompt", "a cat", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "folder with --t5" in err and "t5_path" not in err


def test_a_checkpoint_that_would_run_code_is_refused_in_those_words(tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))
    gpt, vq = tiny_llamagen("c2i")
    torch.save({"model": gpt.state_dict(), "x": RunsCode()}, tmp_path / "c2i_B_64.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    assert main(["generate", "--model", str(tmp_path / "c2i_B_64.pt"), "--class-label", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds code" in err and "refused" in err and "corrupt" not in err


def test_the_embedded_demo_model_by_name(tmp_path):
    assert main(["generate", "--model", "demo", "--class-label", "4", "-o", str(tmp_path / "d.png"),
                 "--device", "cpu"]) == 0
    meta = meta_of(tmp_path / "d.png")
    assert meta["model"]["source"] == "demo" and meta["settings"]["window"] == 4  # the demo model's own default
    assert Image.open(tmp_path / "d.png").size == (32, 32)


def test_a_grid_with_a_side_beyond_the_trained_one_warns_once(model_dir, tmp_path, monkeypatch, capsys):
    """README: "up to the trained grid" while larger grids were accepted with a warning (one line, once, however
    many checks see the grid: before loading, after loading, in the pipeline call)."""
    import warnings

    from zipar.zipar_core.models.llamagen import adapter

    monkeypatch.setattr(adapter, "_WARNED", set())  # grids already warned about by earlier tests
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # no help from the warnings filter's own de-duplication
        assert main(["generate", "--model", model_dir, "--class-label", "1", "--height", "32", "--width", "128",
                     "-o", str(tmp_path / "wide.png"), "--device", "cpu"]) == 0
    said = [x for x in capsys.readouterr().err.splitlines() if "longer than the trained" in x]
    assert len(said) == 1 and said[0].startswith("zipar generate: warning: grid 2x8")
    assert Image.open(tmp_path / "wide.png").size == (128, 32)

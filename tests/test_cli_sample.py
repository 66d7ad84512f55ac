"""``zipar generate`` and ``zipar sample`` on a tiny class-conditional LlamaGen saved as a ZipAR pipeline.

Sharding is tested with two real processes that carry the environment ``accelerate launch`` sets (RANK,
WORLD_SIZE, LOCAL_RANK, ...), forked from this one so they start without re-importing torch and diffusers;
resuming with a process that is SIGKILLed part-way through the set.
"""
import json
import multiprocessing
import os
import signal
import socket
import time

import numpy as np
import pytest
import torch
from helpers import gen, quiet, tiny_llamagen_pipeline_folder
from PIL import Image
from zipar import ZipARPipeline
from zipar.cli import main
from zipar.cli.sample import batches, image_path, parse_classes, share_order

CLASSES = "0-4"  # 5 classes x 2 images = 10 images of 64 x 64
SETTINGS = ["--window", "2", "--cfg", "1.5", "--top-k", "20"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_llamagen_pipeline_folder(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return quiet(ZipARPipeline.from_pretrained(model_dir))


def reference(pipe, label, seed):
    """What the set's image with this class and seed must be: one image, alone, generator seed."""
    out = pipe(class_labels=[label], generator=gen(seed), window=2, guidance_scale=1.5, top_k=20, output_type="pil")
    return np.asarray(out.images[0])


def assert_same_image(a, b):
    """Equal up to 1/255: a batched VQ decode may round a pixel differently from a single one."""
    assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1


def test_generate_writes_pngs_with_settings_in_metadata(model_dir, pipe, tmp_path, capsys):
    out = tmp_path / "cat.png"
    assert main(["generate", "--model", model_dir, "--class-label", "3", "-n", "2", "--seed", "7", "-o", str(out),
                 "--device", "cpu", *SETTINGS]) == 0
    files = [tmp_path / "cat-0.png", tmp_path / "cat-1.png"]
    assert capsys.readouterr().out.split() == [str(f) for f in files]
    for b, f in enumerate(files):
        image = Image.open(f)
        meta = json.loads(image.text["zipar"])
        assert meta["condition"] == {"class_label": 3} and meta["seed"] == 7 + b
        assert meta["model"]["source"] == model_dir and meta["dtype"] == "float32" and meta["device_type"] == "cpu"
        s = meta["settings"]
        assert (s["mode"], s["window"], s["guidance_scale"], s["top_k"]) == ("fixed", 2, 1.5, 20)
        assert s["family"] == "llamagen" and meta["stats"]["passes"] == 3 * 2 + 4 and s["height"] == 64
        assert meta["batch"] == {"size": 2, "slot": b, "conditions": [3, 3], "seeds": [7, 8]}
        assert set(meta["versions"]) == {"zipar", "torch", "transformers", "diffusers"}
        assert_same_image(image.convert("RGB"), reference(pipe, 3, 7 + b))


def test_generate_jacobi_flags(model_dir, pipe, tmp_path):
    out = tmp_path / "sjd.png"
    assert main(["generate", "--model", model_dir, "--class-label", "3", "--seed", "7", "-o", str(out), "--device",
                 "cpu", "--mode", "sjd", "--draft-length", "3", "--draft-init", "random"]) == 0
    meta = json.loads(Image.open(out).text["zipar"])
    settings = meta["settings"]
    assert (settings["mode"], settings["draft_length"], settings["draft_init"]) == ("sjd", 3, "random")
    ref = pipe(class_labels=[3], generator=gen(7), mode="sjd", draft_length=3, draft_init="random", output_type="pil")
    assert_same_image(Image.open(out).convert("RGB"), ref.images[0])


def test_generate_speed_options_give_the_same_image(model_dir, pipe, tmp_path, emulated_cuda_graphs):
    out = tmp_path / "fast.png"
    assert main(["generate", "--model", model_dir, "--class-label", "3", "--seed", "7", "-o", str(out),
                 "--device", "cpu", "--cuda-graphs", *SETTINGS]) == 0
    assert emulated_cuda_graphs  # the option reached the sampler (graphs emulated on CPU)
    meta = json.loads(Image.open(out).text["zipar"])
    assert "cuda_graphs" not in meta["settings"] and "compile" not in meta["settings"]  # speed only
    assert_same_image(Image.open(out).convert("RGB"), reference(pipe, 3, 7))


def test_generate_bad_input_is_a_clear_error(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", model_dir, "--class-label", "12", "-o", str(tmp_path / "x.png")]) == 2
    assert "class label(s) [12] out of range" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "nope"), "--class-label", "1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_class_specs_batches_and_shares():
    assert parse_classes("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="'0-x'"):
        parse_classes("0-x")
    assert batches(5, 2) == [[0, 1], [2, 3], [4]]
    orders = [share_order(5, r, 2) for r in range(2)]
    assert orders == [[0, 2, 4, 1, 3], [1, 3, 0, 2, 4]]  # its own share first, then the others (never idle)


def _rank_process(argv, rank, world):
    """A process as accelerate launch starts it: the same command, RANK/WORLD_SIZE/LOCAL_RANK in the environment."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT="29555", ACCELERATE_USE_CPU="true")
    torch.set_num_threads(1)
    os._exit(main(argv))


def _sample_argv(model_dir, out, batch):
    return ["sample", "--model", model_dir, "--classes", CLASSES, "--images-per-prompt", "2", "--out", str(out),
            "--batch-size", str(batch), "--seed", "100", "--device", "cpu", *SETTINGS]


def _logged(out):
    """Indices each process wrote, from the per-process logs."""
    return {f.name: [i for line in f.read_text().splitlines() for i in json.loads(line)["indices"]]
            for f in sorted(out.glob("log-rank*.jsonl"))}


def _run_processes(argvs_ranks, world):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank_process, args=(argv, r, world)) for argv, r in argvs_ranks]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0


def _writes(out):
    """How many times each index was written, from the logs of every process."""
    counts = {}
    for f in out.glob("log-rank*.jsonl"):
        for line in f.read_text().splitlines():
            for i in json.loads(line)["indices"]:
                counts[i] = counts.get(i, 0) + 1
    return counts


def test_sample_two_ranks_write_every_index_exactly_once(model_dir, pipe, tmp_path):
    argv = _sample_argv(model_dir, tmp_path, batch=2)
    _run_processes([(argv, 0), (argv, 1)], world=2)
    logs = _logged(tmp_path)
    assert set(logs) <= {"log-rank0-of-2.jsonl", "log-rank1-of-2.jsonl"}
    assert _writes(tmp_path) == {i: 1 for i in range(10)}  # no duplicates, no gaps
    arr = np.load(tmp_path / "samples.npz")["arr_0"]
    assert arr.shape == (10, 64, 64, 3) and arr.dtype == np.uint8
    for i in range(10):
        np.testing.assert_array_equal(arr[i], np.asarray(Image.open(image_path(str(tmp_path), i)).convert("RGB")))
        assert json.loads(Image.open(image_path(str(tmp_path), i)).text["zipar"])["index"] == i
    assert not list(tmp_path.glob(".*tmp")) and not (tmp_path / ".claims").exists()
    # a finished set: running again makes nothing
    assert main(argv) == 0 and _logged(tmp_path) == logs


def test_two_samplers_started_on_one_folder_share_the_work(model_dir, tmp_path):
    """Two runs of the same command (no ranks: each believes it is alone) make each image exactly once."""
    argv = _sample_argv(model_dir, tmp_path, batch=1)
    _run_processes([(argv, 0), (argv, 0)], world=1)
    assert _writes(tmp_path) == {i: 1 for i in range(10)}
    pids = {json.loads(line)["pid"] for line in (tmp_path / "log-rank0-of-1.jsonl").read_text().splitlines()}
    assert len(pids) == 2  # both worked
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape == (10, 64, 64, 3)


def test_sample_killed_and_restarted_completes_the_set(model_dir, pipe, tmp_path):
    argv = _sample_argv(model_dir, tmp_path, batch=1)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_rank_process, args=(argv, 0, 1))
    proc.start()
    deadline = time.time() + 300
    while len(list(tmp_path.glob("0*.png"))) < 3 and proc.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    first = sorted(int(f.stem) for f in tmp_path.glob("0*.png"))
    assert len(first) >= 3
    dead = f".000009.png.{socket.gethostname()}.{proc.pid}.x1y2.tmp"
    (tmp_path / dead).write_bytes(b"half an image")  # what a kill mid-write leaves
    if len(first) < 10:
        assert not (tmp_path / "samples.npz").exists()
    assert main(argv) == 0
    second = [i for i in _logged(tmp_path)["log-rank0-of-1.jsonl"] if i not in first]
    assert sorted(first + second) == list(range(10))  # the restart made exactly the missing ones
    assert not (tmp_path / dead).exists() and not (tmp_path / ".claims").exists()  # the dead run's leftovers
    arr = np.load(tmp_path / "samples.npz")["arr_0"]
    assert arr.shape == (10, 64, 64, 3)
    for i in (0, 5, 9):  # image i is class i // 2 with seed 100 + i, however the run was split
        assert_same_image(arr[i], reference(pipe, i // 2, 100 + i))


def test_sample_refuses_to_mix_two_sets(model_dir, tmp_path, capsys):
    argv = _sample_argv(model_dir, tmp_path, batch=5)
    assert main(argv + ["--rank", "0", "--world-size", "5"]) == 0  # a share of 2 images
    capsys.readouterr()
    changed = [a if a != "100" else "101" for a in argv]
    assert main(changed) == 2
    assert "seed: 100 in the folder, 101 now" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("ZIPAR_SLOW_TESTS"), reason="starts real accelerate processes (~20 s); set "
                    "ZIPAR_SLOW_TESTS=1")
def test_sample_under_a_real_accelerate_launch(model_dir, tmp_path):
    import subprocess
    import sys

    (tmp_path / "path").mkdir()
    os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), tmp_path / "path" / "zipar")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "path")}
    # accelerate's --cpu launcher starts one process (multi-CPU needs MPI); --multi_gpu starts torch.distributed.run,
    # which sets the same variables with or without GPUs, and sampling needs no process group.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zipar.cli",
           *_sample_argv(model_dir, tmp_path / "out", batch=2)]
    subprocess.run(cmd, env=env, check=True, timeout=300)
    logs = _logged(tmp_path / "out")
    assert sorted(logs) == ["log-rank0-of-2.jsonl", "log-rank1-of-2.jsonl"]
    assert sorted(i for v in logs.values() for i in v) == list(range(10))
    assert np.load(tmp_path / "out" / "samples.npz")["arr_0"].shape == (10, 64, 64, 3)

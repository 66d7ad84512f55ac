"""The embedded demo model: procedural dataset, shipped weights through the standard LlamaGen loader,
generation on its 16x16 grid, the evaluation classifier, and a small quality check."""
import os

import numpy as np
import pytest
import torch
from zipar.demo_model import GPT_WEIGHTS, VQ_WEIGHTS, WEIGHTS_DIR, load_demo_model
from zipar.demo_model.classifier import WEIGHTS as CLASSIFIER_WEIGHTS
from zipar.demo_model.classifier import classify, frechet_distance, load_classifier
from zipar.demo_model.dataset import CLASSES, IMAGE_SIZE, NUM_CLASSES, make_image, make_images, to_tensor, to_uint8
from zipar.zipar_core import ZipARConfig, generate
from zipar.zipar_core.models import load_model
from zipar.zipar_core.models.llamagen import LlamaGenAdapter, load_llamagen


@pytest.fixture(scope="module")
def model():
    return load_demo_model()


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_dataset_is_deterministic_and_balanced():
    a, la = make_images(30, seed=5)
    b, lb = make_images(30, seed=5)
    assert a.shape == (30, IMAGE_SIZE, IMAGE_SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.array_equal(la, np.arange(30) % NUM_CLASSES) and len(CLASSES) == NUM_CLASSES == 10
    # image i does not depend on n or on where the batch starts; other seeds give other images
    c, _ = make_images(10, seed=5, start=20)
    assert np.array_equal(c, a[20:])
    assert np.array_equal(make_image(5, 7, 7), a[7])
    assert not np.array_equal(make_images(30, seed=6)[0], a)
    # every image shows two colours (or a blend): nothing is blank
    assert all(len(np.unique(img.reshape(-1, 3), axis=0)) >= 2 for img in a)
    assert np.array_equal(to_uint8(to_tensor(a)), a)


def test_shipped_weights_are_small_and_load_through_the_llamagen_loader(model):
    sizes = {p: os.path.getsize(p) for p in (GPT_WEIGHTS, VQ_WEIGHTS, CLASSIFIER_WEIGHTS)}
    assert sum(sizes.values()) < 40 * 2**20, sizes
    assert isinstance(model, LlamaGenAdapter)
    assert model.default_grid == (16, 16) and model.default_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert model.num_classes == NUM_CLASSES and model.codebook_size == model.vq.config.codebook_size
    # the same files through the general loaders: file pair, GPT file alone (VQ found beside it), folder
    for loaded in (load_llamagen(GPT_WEIGHTS, VQ_WEIGHTS), load_model(GPT_WEIGHTS, device="cpu"),
                   load_model(WEIGHTS_DIR, device="cpu")):
        assert loaded.default_grid == (16, 16) and loaded.pixels_per_token == model.pixels_per_token
        sd, ref = loaded.gpt.state_dict(), model.gpt.state_dict()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_generates_a_16x16_grid_and_decodes_it(model):
    cond = model.prepare(class_labels=[0, 5], guidance_scale=2.0)
    for cfg in (ZipARConfig(mode="fixed", window=4, guidance_scale=2.0),
                ZipARConfig(mode="adaptive", window=3, guidance_scale=2.0)):
        out = generate(model, cond, cfg, generator=torch.Generator().manual_seed(0))
        assert out.codes.shape == (2, 16, 16)
        assert 0 <= int(out.codes.min()) and int(out.codes.max()) < model.codebook_size
        images = model.decode(out.codes)
        assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and images.abs().max() <= 1
    assert generate(model, cond, ZipARConfig(mode="fixed", window=4, guidance_scale=2.0)).stats.passes == 15 * 4 + 16


def test_greedy_jacobi_modes_give_ntp_s_tokens_in_fewer_passes(model):
    """On the trained demo model (not only on tiny random ones): greedy ``sjd`` and greedy ``zipar_sjd`` with
    ``window == cols`` reproduce NTP's tokens exactly, with guidance, in fewer passes (each draft coupling and
    visibility rule too)."""
    cond = model.prepare(class_labels=[0, 3, 7], guidance_scale=2.0)
    ntp = generate(model, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=2.0))
    assert len(ntp.codes.unique()) > 10
    for mode in ("sjd", "zipar_sjd"):
        for init in ("spatial", "random"):
            cfg = ZipARConfig(mode=mode, window=16, draft_length=8, draft_init=init, temperature=0, guidance_scale=2.0)
            out = generate(model, cond, cfg)
            assert torch.equal(out.codes, ntp.codes), (mode, init)
            assert out.stats.passes < ntp.stats.passes, (mode, init, out.stats.passes)
    for mode, coupling, visibility in (("sjd", "maximal", "chain"), ("sjd", "gumbel", "chain"),
                                       ("zipar_sjd", "gumbel", "rows"), ("zipar_sjd", "maximal", "rows")):
        cfg = ZipARConfig(mode=mode, window=16, draft_length=8, temperature=0, guidance_scale=2.0,
                          draft_coupling=coupling, draft_visibility=visibility)
        out = generate(model, cond, cfg)
        assert torch.equal(out.codes, ntp.codes) and out.stats.passes < ntp.stats.passes, (mode, coupling)


def test_classifier_loads_and_recognises_real_images(classifier):
    images, labels = make_images(100, seed=1)
    pred, feats = classify(classifier, images)
    assert (pred == labels).mean() >= 0.9
    assert feats.shape == (100, 128)
    other, _ = make_images(100, seed=1, start=100)
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    _, f_other = classify(classifier, other)
    _, f_noise = classify(classifier, noise)
    assert frechet_distance(f_other, feats) < frechet_distance(f_noise, feats)


def test_ntp_samples_are_recognisable(model, classifier):
    """40 NTP samples (4 per class): the classifier names the requested class far above chance (10%);
    81.5% on 1000 samples in docs/demo_model.md (32 of these 40)."""
    labels = [i % NUM_CLASSES for i in range(40)]
    cond = model.prepare(class_labels=labels, guidance_scale=2.0)
    gens = [torch.Generator().manual_seed(i) for i in range(40)]
    codes = generate(model, cond, ZipARConfig(mode="ntp", guidance_scale=2.0), generator=gens).codes
    pred, _ = classify(classifier, to_uint8(model.decode(codes)))
    assert (pred == np.array(labels)).mean() >= 0.7


def test_safetensors_metadata_tells_the_loader_what_shapes_cannot(tmp_path):
    """n_head / image_size / pixels_per_token from a GPT file's metadata; arguments win over it."""
    from safetensors.torch import save_file
    from zipar.zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer, load_llamagen_gpt

    gpt = LlamaGenTransformer(LlamaGenConfig(dim=64, n_layer=2, n_head=2, vocab_size=32, num_classes=3,
                                             block_size=36, multiple_of=32))
    path = tmp_path / "my_model.safetensors"
    save_file({k: v.contiguous() for k, v in gpt.state_dict().items()}, str(path),
              metadata={"n_head": "2", "image_size": "24", "pixels_per_token": "4"})
    loaded = load_llamagen_gpt(path)
    assert (loaded.config.n_head, loaded.config.block_size) == (2, 36)
    assert load_llamagen_gpt(path, image_size=16).config.block_size == 16
    assert load_llamagen_gpt(path, pixels_per_token=8).config.block_size == 9


# ------------------------------------------------------------------------------------------------------
# Training: checkpoints and bit-for-bit resumption


def _train(run_dir, *extra):
    from zipar.demo_model import train_gpt

    return train_gpt.main(["--dim", "32", "--layers", "1", "--heads", "2", "--batch", "4", "--warmup", "2",
                           "--run-dir", str(run_dir), "--out", str(run_dir / "out.safetensors"), "--log-every", "1",
                           "--vq", VQ_WEIGHTS, "--threads", str(torch.get_num_threads()), *extra])


def _same_state(a: dict, b: dict) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_training_resumes_bit_for_bit(tmp_path):
    """6 steps in one go == 3 steps, stop (checkpoint), resume for the other 3: same weights, EMA, optimiser
    state and losses; the exported files are equal and load through the LlamaGen loader."""
    whole = _train(tmp_path / "whole", "--steps", "6")
    _train(tmp_path / "split", "--steps", "6", "--stop-after", "3")
    first = torch.load(tmp_path / "split" / "ckpt.pt", weights_only=False)
    assert first["step"] == 3
    split = _train(tmp_path / "split", "--steps", "6", "--resume")
    assert split["step"] == whole["step"] == 6 and split["sittings"] == 2
    for key in ("model", "ema", "optimizer", "torch_rng"):
        assert _same_state(whole[key], split[key]), key
    strip_time = lambda log: [{k: v for k, v in r.items() if k != "train_seconds"} for r in log]  # noqa: E731
    assert strip_time(whole["log"]) == strip_time(split["log"]) and whole["loss_ema"] == split["loss_ema"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "out.safetensors"), load_file(tmp_path / "split" / "out.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = load_llamagen(tmp_path / "whole" / "out.safetensors", VQ_WEIGHTS)
    assert loaded.default_grid == (16, 16)
    # a finished run is not restarted by mistake, and other run arguments are refused on resume
    with pytest.raises(SystemExit, match="exists"):
        _train(tmp_path / "whole", "--steps", "6")
    with pytest.raises(SystemExit, match="other run arguments"):
        _train(tmp_path / "split", "--steps", "6", "--lr", "1e-3", "--resume")


def test_training_can_be_extended_before_the_cool_down(tmp_path):
    """Warmup-stable-decay: a run stopped before its cool-down may be resumed with more steps, and then
    equals a run planned that long from the start."""
    from zipar.demo_model.train_gpt import decay_start, lr_at, parser

    args = parser().parse_args(["--steps", "100", "--warmup", "10", "--decay", "0.2"])
    assert decay_start(args) == 80 and lr_at(9, args) == args.lr == lr_at(79, args)
    assert lr_at(99, args) < 0.1 * args.lr and lr_at(4, args) == pytest.approx(args.lr / 2)
    _train(tmp_path / "short", "--steps", "8", "--decay", "0.5", "--stop-after", "2")
    longer = _train(tmp_path / "short", "--steps", "10", "--decay", "0.5", "--resume")
    planned = _train(tmp_path / "long", "--steps", "10", "--decay", "0.5")
    assert _same_state(longer["model"], planned["model"]) and _same_state(longer["ema"], planned["ema"])
    _train(tmp_path / "late", "--steps", "8", "--decay", "0.5", "--stop-after", "5")  # in the cool-down now
    with pytest.raises(SystemExit, match="other run arguments"):
        _train(tmp_path / "late", "--steps", "10", "--decay", "0.5", "--resume")


# ------------------------------------------------------------------------------------------------------
# Evaluation statistics: bootstrap intervals, paired comparisons, configurations, pictures


def _gaussian_fd(mu1, s1, mu2, s2):
    import scipy.linalg

    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def test_bootstrap_fd_matches_the_classifier_fd_and_covers_the_true_value():
    from zipar.demo_model.bootstrap import Bootstrap

    rng = np.random.default_rng(0)
    d, n = 4, 2000
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.5, 0.0, 0.0])
    a = rng.normal(size=(d, d))
    s1, s2 = np.eye(d), a @ a.T / d + 0.5 * np.eye(d)
    true = _gaussian_fd(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=n)
    real = rng.multivariate_normal(mu2, s2, size=n)
    labels = np.arange(n) % 10
    bs = Bootstrap(labels, real, labels, resamples=300, seed=0)
    res = bs.fd(x)
    assert res["value"] == pytest.approx(frechet_distance(x, real), rel=1e-9)
    lo, hi = res["ci"]
    assert lo < true < hi and lo < res["value"] < hi, (lo, true, res["value"], hi)
    # the same seed gives the same interval; more samples give a narrower one
    assert Bootstrap(labels, real, labels, resamples=300, seed=0).fd(x)["ci"] == res["ci"]
    small = Bootstrap(labels[:200], real[:200], labels[:200], resamples=300, seed=0).fd(x[:200])
    assert (small["ci"][1] - small["ci"][0]) > 2 * (hi - lo)


def test_bootstrap_fd_interval_corrects_the_bias_of_many_dimensions():
    """64-d features, 400 samples: the FD estimate is biased upward by more than its noise; the resampled
    values are biased about as much again. The basic interval (used) covers the true FD; the percentile
    interval of the same resamples would miss it."""
    from zipar.demo_model.bootstrap import Bootstrap, percentile_ci

    rng = np.random.default_rng(4)
    d, n = 64, 400
    x = rng.normal(size=(n, d))
    real = rng.normal(size=(2 * n, d)) + 0.15
    true = d * 0.15 ** 2  # same covariance, means 0.15 apart in every dimension
    res = Bootstrap(np.arange(n) % 10, real, np.arange(2 * n) % 10, resamples=300, seed=0).fd(x)
    assert res["value"] > true + 1.0 and res["bias"] > 1.0
    assert res["ci"][0] < true < res["ci"][1], (res["ci"], true)
    assert percentile_ci(res["resampled"])[0] > true


def test_bootstrap_accuracy_interval_covers_the_true_rate():
    """Coverage on a synthetic case: 60 experiments of 300 Bernoulli(0.7) outcomes; the 95% interval
    holds 0.7 in about 95% of them (here at least 85%), and its width is about 2 * 1.96 * sd."""
    from zipar.demo_model.bootstrap import Bootstrap

    rng = np.random.default_rng(1)
    labels = np.arange(300) % 10
    bs = Bootstrap(labels, rng.normal(size=(50, 3)), resamples=400, seed=3)
    covered, widths = 0, []
    for _ in range(60):
        correct = rng.random(300) < 0.7
        lo, hi = bs.accuracy(correct)["ci"]
        covered += lo <= 0.7 <= hi
        widths.append(hi - lo)
    assert covered >= 51, covered
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 300), rel=0.2)


def test_paired_difference_and_the_comparison_at_equal_passes():
    from zipar.demo_model.bootstrap import Bootstrap
    from zipar.demo_model.evaluate import compare_at_equal_passes, score_rows, verdict

    rng = np.random.default_rng(2)
    n = 500
    labels = np.arange(n) % 10
    real = rng.normal(size=(1000, 3))
    base = rng.normal(size=(n, 3))
    per_image = {  # fixed rows get worse as they get cheaper; "adaptive" equals the fixed row at 100 passes
        "fixed s=1": (labels, labels, base + 0.6), "fixed s=2": (labels, labels, base + 0.3),
        "fixed s=4": (labels, labels, base + 0.0), "adaptive s_min=1": (labels, labels, base + 0.3),
        "adaptive s_min=3": (labels, (labels + (np.arange(n) % 4 == 0)) % 10, base + 0.0),
    }
    rows = [{"name": "fixed s=1", "kind": "fixed", "family": "fixed", "passes": 31.0},
            {"name": "fixed s=2", "kind": "fixed", "family": "fixed", "passes": 46.0},
            {"name": "fixed s=4", "kind": "fixed", "family": "fixed", "passes": 76.0},
            {"name": "adaptive s_min=1", "kind": "adaptive", "family": "adaptive", "passes": 38.5},
            {"name": "adaptive s_min=3", "kind": "adaptive", "family": "adaptive", "passes": 90.0}]
    boot = score_rows(rows, per_image, real, np.zeros(1000, int), resamples=200)
    assert isinstance(boot, Bootstrap) and all(len(r["fd_ci"]) == 2 and len(r["accuracy_ci"]) == 2 for r in rows)
    same = boot.diff(rows[1]["_fd"], rows[1]["_fd"])
    assert same["value"] == 0 and same["ci"] == (0.0, 0.0)
    # paired: the difference of two rows that share their images is far narrower than either interval
    d = boot.diff(rows[0]["_fd"], rows[2]["_fd"])
    assert d["ci"][0] > 0 and verdict(d) == "a worse"
    assert d["ci"][1] - d["ci"][0] < (rows[0]["fd_ci"][1] - rows[0]["fd_ci"][0])
    comp = {c["a"]: c for c in compare_at_equal_passes(rows, boot)}
    c1 = comp["adaptive s_min=1"]  # 38.5 passes: halfway between fixed s=1 and s=2
    assert c1["nearest"]["b"] in ("fixed s=1", "fixed s=2")
    assert c1["interpolated"]["t"] == pytest.approx(0.5)
    assert c1["interpolated"]["fd_b"] == pytest.approx((rows[0]["fd"] + rows[1]["fd"]) / 2)
    assert c1["interpolated"]["fd_diff"]["ci"][1] < 0  # a's images (shift 0.3) beat the mix of 0.6 and 0.3
    c3 = comp["adaptive s_min=3"]  # beyond the last fixed row: nearest only; it lost 25% accuracy
    assert "interpolated" not in c3 and c3["nearest"]["b"] == "fixed s=4"
    assert c3["nearest"]["accuracy_diff"]["value"] == pytest.approx(-0.25)
    assert c3["nearest"]["accuracy_diff"]["ci"][1] < 0 and c3["nearest"]["fd_diff"]["value"] == pytest.approx(0)


def model_vocab() -> int:
    from zipar.zipar_core.models.llamagen import load_llamagen_vq

    return load_llamagen_vq(VQ_WEIGHTS).config.codebook_size


def test_evaluation_configs_are_keyword_dicts_with_room_for_new_modes():
    from zipar.demo_model.evaluate import configs_from_args, family, family_label, parser, row_name

    args = parser().parse_args(["--fixed", "2", "4", "--adaptive", "3", "--paper-fixed", "4",
                                "--config", '{"mode": "fixed", "window": 6, "top_k": 5}'])
    kws = configs_from_args(args)
    assert [row_name(k) for k in kws] == ["ntp", "fixed s=2", "fixed s=4", "adaptive s_min=3",
                                          "fixed s=4 (paper first row)", "fixed s=6"]
    assert all(k["guidance_scale"] == 2.0 for k in kws) and kws[-1]["top_k"] == 5 and kws[0]["top_k"] == 0
    assert [family(k) for k in kws[:5]] == ["ntp", "fixed", "fixed", "adaptive", "fixed, paper first row"]
    assert family_label("fixed, paper first row") == "fixed window (paper first row)"
    # modes this script has no flag for: their own family and a name from their keywords
    assert family({"mode": "sjd", "draft_length": 4}) == "sjd" and family_label("new_mode") == "new_mode"
    assert row_name({"mode": "sjd", "draft_length": 4, "guidance_scale": 2.0}) == "sjd draft_length=4"
    assert row_name({"mode": "zipar_sjd", "window": 4, "draft_length": 8}) == "zipar_sjd s=4 draft_length=8"
    assert row_name({"mode": "new_mode", "window": 4, "draft_length": 4}) == "new_mode window=4 draft_length=4"
    with pytest.raises(SystemExit, match="not a ZipARConfig"):
        configs_from_args(parser().parse_args(["--config", '{"mode": "fixed", "no_such_option": 4}']))
    with pytest.raises(SystemExit, match="JSON object"):
        configs_from_args(parser().parse_args(["--config", '[4]']))


def test_evaluation_end_to_end_writes_intervals_plot_and_grids(tmp_path):
    """A tiny run of the whole evaluation (20 samples per row, a tiny random GPT of the demo's vocabulary
    and grid, the shipped VQ and classifier): every row has intervals, the comparison is there, the
    pictures are written, and --rescore gives the same numbers from the saved features."""
    pytest.importorskip("matplotlib")
    import json

    from PIL import Image
    from safetensors.torch import save_file
    from zipar.demo_model import evaluate
    from zipar.zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer

    torch.manual_seed(0)
    gpt = LlamaGenTransformer(LlamaGenConfig(dim=32, n_layer=1, n_head=2, vocab_size=model_vocab(), num_classes=10,
                                             block_size=256, multiple_of=32))
    gpt_path = tmp_path / "tiny_gpt.safetensors"
    save_file({k: v.contiguous() for k, v in gpt.state_dict().items()}, str(gpt_path),
              metadata={"n_head": "2", "image_size": str(IMAGE_SIZE), "pixels_per_token": "2"})
    out = evaluate.main(["--gpt", str(gpt_path), "--samples", "20", "--batch", "20", "--real", "40", "--fixed", "2", "8",
                         "--adaptive", "3", "--paper-fixed", "--no-random", "--latency-reps", "0",
                         "--config", '{"mode": "sjd", "draft_length": 4}',
                         "--config", '{"mode": "zipar_sjd", "window": 2, "draft_length": 4}',
                         "--resamples", "50", "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "p.png"),
                         "--ntp-grid", str(tmp_path / "g.png"), "--features", str(tmp_path / "f.npz"),
                         "--table", str(tmp_path / "t.md")])
    assert torch.is_grad_enabled()  # main() decodes without autograd but leaves its caller's mode alone
    names = [r["name"] for r in out["rows"]]
    assert names == ["held-out real images", "VQ reconstructions of them", "ntp", "fixed s=2", "fixed s=8",
                     "adaptive s_min=3", "sjd draft_length=4", "zipar_sjd s=2 draft_length=4"]
    for r in out["rows"]:
        assert r["accuracy_ci"][0] <= r["accuracy_ci"][1] and r["fd_ci"][0] <= r["fd_ci"][1]
    assert out["comparison"][0]["a"] == "adaptive s_min=3" and "interpolated" in out["comparison"][0]
    # each Jacobi row against the row it drafts for, paired: sjd vs ntp, zipar_sjd s=2 vs fixed s=2, and vs ntp
    pairs = [(c["a"], c["b"]) for c in out["jacobi_vs_base"]]
    assert pairs == [("sjd draft_length=4", "ntp"), ("zipar_sjd s=2 draft_length=4", "fixed s=2"),
                     ("zipar_sjd s=2 draft_length=4", "ntp")]
    rows = {r["name"]: r for r in out["rows"]}
    for c in out["jacobi_vs_base"]:
        assert c["pass_ratio"] == rows[c["a"]]["passes"] / rows[c["b"]]["passes"] <= 1
        assert c["fd_diff"]["value"] == pytest.approx(rows[c["a"]]["fd"] - rows[c["b"]]["fd"], abs=1e-6)
        assert c["fd_diff"]["ci"][0] <= c["fd_diff"]["ci"][1]
    assert json.load(open(tmp_path / "e.json"))["rows"][2]["passes"] == 256
    table = (tmp_path / "t.md").read_text()
    assert "[95% CI]" in table and "passes a / b" in table
    assert Image.open(tmp_path / "p.png").size[0] > 600
    assert Image.open(tmp_path / "g.png").size[1] >= 10 * IMAGE_SIZE * 3  # 2 per class here, one row each
    again = evaluate.main(["--rescore", str(tmp_path / "f.npz"), "--resamples", "50", "--ntp-grid", ""])
    for r, s in zip(out["rows"], again["rows"]):
        assert r["accuracy"] == s["accuracy"] and r["fd"] == pytest.approx(s["fd"], rel=1e-4, abs=1e-3)
    # several runs' features rescore as one run: rows in both are taken once; a row that differs is refused
    import numpy as np

    z = dict(np.load(tmp_path / "f.npz"))
    keep = json.loads(str(z["rows"]))[:3] + [json.loads(str(z["rows"]))[-1]]  # references, ntp, zipar_sjd
    part = {"rows": json.dumps(keep), "meta": z["meta"], "real_feats": z["real_feats"], "real_labels": z["real_labels"]}
    for new, old in enumerate([0, 1, 2, len(json.loads(str(z["rows"]))) - 1]):
        for k in ("labels", "pred", "feats", "images"):
            part[f"{k}_{new}"] = z[f"{k}_{old}"]
    np.savez(tmp_path / "part.npz", **part)
    merged = evaluate.main(["--rescore", str(tmp_path / "part.npz"), str(tmp_path / "f.npz"), "--resamples", "50",
                            "--ntp-grid", ""])
    assert sorted(r["name"] for r in merged["rows"]) == sorted(names)
    part["pred_2"] = (part["pred_2"] + 1) % 10
    np.savez(tmp_path / "part.npz", **part)
    with pytest.raises(SystemExit, match="row 'ntp' differs"):
        evaluate.main(["--rescore", str(tmp_path / "part.npz"), str(tmp_path / "f.npz"), "--resamples", "50"])

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
        assert loaded.default_grid == (16, 16) and loaded.downsample == model.downsample
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
    43% on 1000 samples in docs/demo_model.md."""
    labels = [i % NUM_CLASSES for i in range(40)]
    cond = model.prepare(class_labels=labels, guidance_scale=2.0)
    gens = [torch.Generator().manual_seed(i) for i in range(40)]
    codes = generate(model, cond, ZipARConfig(mode="ntp", guidance_scale=2.0), generator=gens).codes
    pred, _ = classify(classifier, to_uint8(model.decode(codes)))
    assert (pred == np.array(labels)).mean() >= 0.25


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

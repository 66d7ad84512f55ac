"""No host syncs inside the decoding loop.

A pass that reads a value back to Python (``item``, ``bool``, ``tolist``), makes a shape that depends on
data (``nonzero``, boolean indexing) or builds a tensor from Python data (a host->device copy) makes the
host wait for the device: a GPU then idles between passes, and a CUDA graph cannot be captured at all.
On CPU such a wait costs nothing measurable, but the operations that would cause it can be seen: a
dispatch mode records them while the loop runs. ntp and fixed schedules must have none after the first
pass (their index tensors are built before the loop); adaptive mode needs exactly one read-back per pass
that verifies a draft (the accept decision steers the schedule), and nothing else.
"""
import pytest
import torch
from helpers import T2I_PREFIX, ToyAR, caption_batch, tiny_gpt, tiny_vq
from torch.utils._python_dispatch import TorchDispatchMode
from zipar.zipar_core import ZipARConfig, generate
from zipar.zipar_core.models.emu3 import Emu3Adapter
from zipar.zipar_core.models.janus import JanusAdapter
from zipar.zipar_core.models.llamagen import LlamaGenAdapter
from zipar.zipar_core.models.lumina import LuminaAdapter
from zipar.zipar_core.models.tiny import tiny_chameleon, tiny_emu3, tiny_janus

aten = torch.ops.aten
READ_BACK = {aten._local_scalar_dense.default}  # item(), bool(t), int(t), if t: ...
DATA_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
               aten.unique_consecutive.default}
HOST_COPY = {aten.lift_fresh.default, aten.lift_fresh_copy.default}  # torch.tensor(python data)


class SyncSpy(TorchDispatchMode):
    """Records, once armed, every dispatched op that would wait for (or copy from the host to) a GPU."""

    def __init__(self):
        super().__init__()
        self.armed, self.found = False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.armed:
            if func in READ_BACK | DATA_SHAPED | HOST_COPY:
                self.found.append(str(func))
            elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
                self.found.append(f"{func} with a boolean index")
            elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
                self.found.append(str(func))
        return func(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch):
    """A SyncSpy that also counts Tensor.tolist (read back without dispatch) while armed."""
    s = SyncSpy()
    tolist = torch.Tensor.tolist

    def counting_tolist(t):
        if s.armed:
            s.found.append("Tensor.tolist")
        return tolist(t)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    return s


def _toy(eol):
    m = ToyAR()
    return m, m.prepare([1, 3], 4, 6, eol=eol, guidance=True)


def _llamagen(kind):
    model = LlamaGenAdapter(tiny_gpt(kind, block_size=36), tiny_vq())
    if kind == "c2i":
        return model, model.prepare(class_labels=[0, 1], rows=5, cols=6, guidance_scale=3.0)
    caps, mask = caption_batch(2, T2I_PREFIX, model.config.caption_dim)
    return model, model.encode_captions(caps, caption_mask=mask, rows=5, cols=6, guidance_scale=3.0)


def _janus():
    m, tok = tiny_janus()
    model = JanusAdapter(m, tok)
    return model, model.prepare(prompt=["a cat", "a red dog on the mat"], guidance_scale=5.0)


def _emu3():
    m, tok = tiny_emu3()
    model = Emu3Adapter(m, tok)
    return model, model.prepare(prompt=["a cat", "a red dog"], negative_prompt="blurry", height=32, width=40,
                                guidance_scale=3.0)


def _lumina():
    m, tok = tiny_chameleon()
    model = LuminaAdapter(m, tok, target_size=None)
    return model, model.prepare(prompt=["a cat", "a red dog"], height=64, width=64, guidance_scale=3.0)


def _lumina2():  # its guidance scale per token: a table the sampler indexes on the device
    from zipar.zipar_core.models.tiny import tiny_lumina2_adapter

    model = tiny_lumina2_adapter()
    return model, model.prepare(prompt=["a cat", "<depth> a red dog"], height=32, width=32, guidance_scale=3.0)


MODELS = {"toy": lambda: _toy(False), "toy-eol": lambda: _toy(True), "llamagen-c2i": lambda: _llamagen("c2i"),
          "llamagen-t2i": lambda: _llamagen("t2i"), "janus": _janus, "emu3": _emu3, "lumina": _lumina,
          "lumina2": _lumina2}
CONFIGS = {"ntp": dict(mode="ntp"), "fixed": dict(window=2), "paper-first-row": dict(window=2, paper_first_row=True),
           "filters+interval": dict(window=3, top_k=5, top_p=0.9, guidance_interval=7)}


def _run(spy, model, cond, config, **options):
    def arm(step, codes, stats):  # after the first pass: setup (schedule tensors, cache) is done
        spy.armed = step >= 1

    with spy:
        result = generate(model, cond, config, callback=arm, generator=torch.Generator().manual_seed(0), **options)
    spy.armed = False
    return result


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_ntp_and_fixed_passes_never_wait_for_the_device(spy, name, cfg):
    model, cond = MODELS[name]()
    result = _run(spy, model, cond, ZipARConfig(temperature=1.0, guidance_scale=3.0, **CONFIGS[cfg]))
    assert result.stats.passes > cond.layout.rows  # the loop really ran while armed
    assert spy.found == []


@pytest.mark.parametrize("name", list(MODELS))
def test_static_shape_steps_never_wait_for_the_device(spy, name):
    """The torch.compile / CUDA-graph step (keys padded to the whole cache) adds no sync either."""
    model, cond = MODELS[name]()
    _run(spy, model, cond, ZipARConfig(window=2, temperature=1.0, guidance_scale=3.0), cuda_graphs=True)
    assert spy.found == []


def test_adaptive_reads_back_once_per_verifying_pass(spy):
    model, cond = MODELS["toy"]()
    result = _run(spy, model, cond, ZipARConfig(mode="adaptive", window=2, temperature=1.0, guidance_scale=3.0))
    verifying_passes = result.stats.drafts_proposed  # upper bound: passes where some image verified
    assert 0 < spy.found.count("Tensor.tolist") <= verifying_passes
    assert set(spy.found) <= {"Tensor.tolist", str(aten.lift_fresh.default)}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode, window", [("sjd", 6), ("zipar_sjd", 2)])
def test_jacobi_reads_back_once_per_pass(spy, name, mode, window):
    """The Jacobi modes read back one small tensor per pass (the accepted counts that steer the next plan);
    their index tensors go to the device from Python data, nothing else waits for the device."""
    model, cond = MODELS[name]()
    cols = cond.layout.cols
    result = _run(spy, model, cond, ZipARConfig(mode=mode, window=min(window, cols), draft_length=3, temperature=1.0,
                                                guidance_scale=3.0))
    assert 0 < spy.found.count("Tensor.tolist") <= result.stats.passes - 1
    assert set(spy.found) <= {"Tensor.tolist", str(aten.lift_fresh.default)}


def test_the_spy_sees_a_read_back(spy):
    """Control: a model whose forward reads a value back (as a careless adapter might) is caught."""
    model, cond = MODELS["toy"]()
    forward = model.forward
    model.forward = lambda *args: forward(*args) * (1 + 0 * float(args[1].max()))  # float(t) = item()
    _run(spy, model, cond, ZipARConfig(window=2, temperature=1.0, guidance_scale=3.0))
    assert str(aten._local_scalar_dense.default) in spy.found

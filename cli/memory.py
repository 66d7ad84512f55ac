"""How much memory a batch will take, said before decoding, and an out-of-memory error said as what to lower.

The estimate (:func:`estimate`) is the key/value cache, exact (the adapter builds the cache of one image on
the meta device, or of one row for real, and it scales with the rows), plus the activations of the widest
pass, from the model's sizes (hidden, MLP, attention scores, logits and the sampler's buffers, at 4 bytes
per value: an upper bound for 16-bit models), plus the weights when they are not loaded yet. It is checked
against the device's free memory (CUDA: ``mem_get_info``; CPU: ``MemAvailable``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..zipar_core.errors import SettingError

GiB = 1 << 30


@dataclass
class Estimate:
    batch: int
    weights: int  # bytes of weights still to load (0 once loaded)
    cache_per_image: int
    activations_per_image: int
    activations_fixed: int

    @property
    def per_image(self) -> int:
        return self.cache_per_image + self.activations_per_image

    @property
    def total(self) -> int:
        return self.weights + self.activations_fixed + self.batch * self.per_image

    def fits(self, free: int) -> int:
        """How many images per batch fit in ``free`` bytes."""
        return max(0, (free - self.weights - self.activations_fixed) // max(self.per_image, 1))

    def describe(self) -> str:
        w = f"weights {self.weights / GiB:.2f} GiB + " if self.weights else ""
        return (f"{w}cache {self.batch * self.cache_per_image / GiB:.2f} GiB + activations "
                f"{(self.activations_fixed + self.batch * self.activations_per_image) / GiB:.2f} GiB for a batch of "
                f"{self.batch} = {self.total / GiB:.2f} GiB")


def _dims(adapter) -> dict:
    """Hidden size, heads, MLP width and vocabulary of the model, from its config (LlamaGen or transformers)."""
    cfg = getattr(adapter, "text_config", None) or getattr(adapter, "config", None)
    get = lambda *names: next((getattr(cfg, n) for n in names if getattr(cfg, n, None)), 0)
    return {"dim": get("hidden_size", "dim"), "heads": get("num_attention_heads", "n_head"),
            "ffn": get("intermediate_size", "hidden_dim"), "vocab": max(get("vocab_size"), adapter.codebook_size)}


def _widest_pass(layout, config) -> int:
    """Query tokens of the widest pass: the mode's own bound (``modes``), or the prompt in prefill."""
    from ..zipar_core.modes import get

    return max(get(config.mode).widest_pass(layout, config), layout.prefix)


def _layout(adapter, request):
    from dataclasses import replace

    if hasattr(adapter, "layout"):  # LlamaGen: known without encoding
        return adapter.layout(request.rows, request.cols)
    one = replace(request, prompts=request.prompts[:1] if request.prompts else None,
                  class_labels=request.class_labels[:1] if request.class_labels else None,
                  negative_prompts=request.negative_prompts[:1] if request.negative_prompts else None)
    return adapter.encode(one, 1.0).layout


def _cache_bytes_per_row(adapter, layout) -> int:
    """Bytes of the slot cache for one model row: the adapter's own cache, for one row (free on meta)."""
    from ..zipar_core.protocol import Conditioning

    probe = Conditioning(layout=layout, batch_size=1, guidance=False, prefix_valid=None)
    cache = adapter.new_cache(probe, layout.num_slots + 1)
    tensors = [t for name in ("keys", "values") for t in getattr(cache, name, [])]
    if not tensors:  # another cache type: whatever tensors it holds
        tensors = [v for v in vars(cache).values() if hasattr(v, "element_size")]
    size = sum(t.numel() * t.element_size() for t in tensors)
    del cache
    return size


def weight_bytes(adapter) -> int:
    modules, _ = adapter.components()
    seen, total = set(), 0
    for m in modules.values():
        for p in (m.parameters() if hasattr(m, "parameters") else []):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
    return total


def estimate(adapter, request, config, batch: int, loaded: bool = True) -> Estimate:
    from ..zipar_core.config import resolve

    layout = _layout(adapter, request)
    config = resolve(adapter.defaults(), layout.cols, config.chosen(), warn=False)  # unset: the family's defaults
    rows_per_image = 2 if config.guidance else 1
    cache = _cache_bytes_per_row(adapter, layout) * rows_per_image
    d = _dims(adapter)
    q, slots = _widest_pass(layout, config), layout.num_slots + 1
    per_row = q * (6 * d["dim"] + 3 * d["ffn"] + 2 * d["heads"] * slots + 2 * d["vocab"]) * 4
    sampler = q * adapter.codebook_size * (4 * 4 + 8)  # probabilities, sorted copy, cumulative sum, mask; indices
    return Estimate(batch=batch, weights=0 if loaded else weight_bytes(adapter), cache_per_image=cache,
                    activations_per_image=per_row * rows_per_image + sampler, activations_fixed=0)


def free_bytes(device: str) -> int | None:
    """Free memory of the device (CUDA: mem_get_info; CPU: MemAvailable); None when unknown."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(est: Estimate, device: str, what: str) -> None:
    """Refuse a batch whose estimate exceeds the device's free memory, naming what to lower."""
    free = free_bytes(device)
    if free is None or est.total <= free:
        return
    fit = est.fits(free)
    lower = (f"lower {{name}} to {fit} or less" if fit >= 1 else
             "even one image does not fit: use a smaller {other:height} / {other:width}, --dtype bfloat16, or a "
             "device with more memory")
    raise SettingError("batch_size", f"{what}: estimated {est.describe()}, but {device} has {free / GiB:.2f} GiB "
                                     f"free: {lower}")


def is_out_of_memory(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def out_of_memory(e: BaseException, batch: int, device: str, est: Estimate | None) -> SettingError:
    said = f" (estimated {est.describe()})" if est is not None else ""
    lower = f"lower {{name}} (e.g. to {max(1, batch // 2)})" if batch > 1 else \
        "use a smaller {other:height} / {other:width}, --dtype bfloat16, or a device with more memory"
    return SettingError("batch_size", f"out of memory on {device} decoding a batch of {batch} images{said}: {lower}")

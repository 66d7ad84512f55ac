"""The memory plan (issue 22): what a model needs on its device before any weight loads, and the check every face
runs with it.

A plan has five terms, each in bytes:

- **weights**: every tensor of the transformer and of what loads beside it (VQ decoders, LlamaGen's FLAN-T5),
  counted from the modules' shapes: a quantized linear layer by bitsandbytes' layout
  (:func:`~.quantization.linear_bytes`), everything else at its dtype. Exact for the tiny models of every family in
  every quantization (``tests/test_quantization.py`` compares it with the bytes a loaded model holds).
- **KV cache**: the slot cache the sampler allocates (``layout.num_slots + 1`` slots for every row of the batch,
  two rows an image with guidance), built by the families' own cache classes on the meta device: exact.
- **activations of the widest pass**: the most queries any pass of the mode can have (:func:`widest_pass`, the
  mode registry's bound) times
  the model's widths (hidden states, MLP, attention scores over every slot, logits; 4 bytes a value), the sampler's
  buffers, and the largest quantized layer dequantized in the compute dtype (bitsandbytes' CPU path and its
  multi-token CUDA path do that per call): an upper bound.
- **VQ decode**: the image decoder run on the meta device for the images decoded at once, its largest operation
  (inputs and output) plus the largest feature map alive beside it (a residual): an estimate.
- **runtime**: on CUDA, the context and allocator reserve, assumed 0.5 GiB (not measured here).

The total is weights + runtime + max(KV cache + activations, VQ decode): decoding and image decoding do not
overlap. Host memory while loading is reported beside it: the original publishers' layouts are read whole and
converted in memory on the CPU before quantizing, so the host holds about the full-precision weights once.

What a family contributes (its modules, cache class, widths, defaults, which layers stay unquantized, its image
decoder on the meta device) arrives as a :class:`Subject`, built in ``models/plan_builders.py`` from a loaded (or
configuration-only) adapter (the command line, the pipeline, the ComfyUI loader) or from a published
configuration or a folder's config.json on the meta device, with no weights (``zipar memory``); this module
knows no family. :func:`check` refuses a plan that does not fit the free memory, with the plan and the settings
that would fit, in the face's words (a :class:`~.errors.SettingError`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import ZipARConfig, resolve
from .errors import SettingError
from .layout import TokenLayout
from .quantization import Quantization, kept, linear_bytes, parse

GiB = 1 << 30
CUDA_RUNTIME = 512 << 20  # CUDA context + allocator reserve: an assumption, not measured here
DEFAULT_TEXT_TOKENS = 96  # prompt and chat template, when no prompt is known
_KEEP = object()  # "the subject's own quantization"


# -- the widest pass ---------------------------------------------------------------------------------

def widest_pass(layout: TokenLayout, config: ZipARConfig) -> int:
    """The most query tokens any pass of ``config.mode`` can feed on ``layout``: the mode's own bound
    (:meth:`~.modes.Mode.widest_pass`, each mode says it), or the prompt's prefill when that is wider."""
    from .modes import get

    return max(get(config.mode).widest_pass(layout, config), layout.prefix)


# -- what is planned ----------------------------------------------------------------------------------

@dataclass
class Subject:
    """A model to plan, as its family describes it: the transformer and the modules that load beside it (real, or
    on the meta device; each part at its own dtype), the compute dtype, its quantization and the prefixes it keeps
    unquantized, its decoder widths, its cache (bytes for rows x slots), its grid facts, its decoding defaults, and
    its image decoder as a function of codes on the meta device (None: no decoder)."""

    name: str
    family: str
    transformer: nn.Module
    parts: dict[str, nn.Module]
    dtype: torch.dtype
    quantization: Quantization | None
    keep: tuple[str, ...]
    codebook: int
    dims: dict  # hidden ("dim"), heads, MLP ("ffn"), vocabulary
    kv_cache: Callable[[int, int, torch.dtype], int]  # (rows, slots, dtype) -> bytes
    defaults: dict  # the family's (variant's) decoding defaults, ZipARConfig fields
    eol: bool = False
    pixels_per_token: int = 16
    default_size: tuple[int, int] | None = None  # (height, width) px
    text_tokens: int = DEFAULT_TEXT_TOKENS  # prefix slots when no prompt is encoded
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    _vq: dict = field(default_factory=dict, repr=False)  # VQ-decode bytes by (images, grid), computed once

    def vq_decode_bytes(self, images: int, grid: tuple[int, int]) -> int:
        if (images, grid) not in self._vq:
            self._vq[images, grid] = vq_decode_bytes(self.decode, images, grid)
        return self._vq[images, grid]

    def layout(self, height: int | None = None, width: int | None = None) -> TokenLayout:
        """The token layout of an image of ``height`` x ``width`` px (default: the model's size) after
        ``text_tokens`` prefix slots."""
        h, w = (height or self.default_size[0]), (width or self.default_size[1])
        f = self.pixels_per_token
        return TokenLayout(h // f, w // f, prefix=self.text_tokens, eol=self.eol)


@dataclass
class MemoryPlan:
    """Bytes a model needs on ``device``; see the module's docstring for each term."""

    model: str
    device: str
    dtype: str
    quantization: str
    mode: str
    window: int
    batch: int
    guidance: bool
    grid: tuple[int, int]
    widest_pass: int
    weights: int
    kv_cache: int
    activations: int
    vq_decode: int
    runtime: int
    host_loading: int
    weight_parts: dict[str, int] = field(default_factory=dict)
    offloadable: int = 0  # weights in plain torch layers (unquantized Linear, Conv2d, GroupNorm, LayerNorm)

    @property
    def least_on_device(self) -> int:
        """The total with every plain layer's weights left on the CPU and cast to the device per call (ComfyUI's
        lowvram path): what the device must hold however much is offloaded."""
        return self.total - self.offloadable

    @property
    def total(self) -> int:
        return self.weights + self.runtime + max(self.kv_cache + self.activations, self.vq_decode)

    def per_device(self) -> dict[str, int]:
        """Peak bytes by device: the compute device, and the host while loading (when it is another device)."""
        kind = self.device.split(":")[0]
        out = {self.device: self.total}
        if kind != "cpu":
            out["cpu (while loading)"] = self.host_loading
        else:
            out[self.device] = max(self.total, self.host_loading)
        return out

    def summary(self) -> str:
        """One line: the total and its terms."""
        r = f" + runtime {gib(self.runtime)}" if self.runtime else ""
        return (f"{gib(self.total)} on {self.device}: weights {gib(self.weights)}{r} + max(KV cache "
                f"{gib(self.kv_cache)} + activations {gib(self.activations)}, VQ decode {gib(self.vq_decode)})")

    def describe(self) -> str:
        """A table of the plan, for ``zipar memory``."""
        guided = " with guidance" if self.guidance else ""
        lines = [f"{self.model}: {self.dtype}, quantization {self.quantization}, mode {self.mode}, window "
                 f"{self.window}, batch {self.batch}{guided}, {self.grid[0]}x{self.grid[1]} tokens, widest pass "
                 f"{self.widest_pass} queries"]
        for name, value in self.weight_parts.items():
            lines.append(f"  weights: {name:<28} {gib(value):>10}")
        for name, value in (("weights", self.weights), ("KV cache", self.kv_cache),
                            ("activations (widest pass)", self.activations), ("VQ decode", self.vq_decode),
                            ("runtime (CUDA, assumed)", self.runtime)):
            if value or name != "runtime (CUDA, assumed)":
                lines.append(f"  {name:<37} {gib(value):>10}")
        for device, value in self.per_device().items():
            lines.append(f"  total on {device:<28} {gib(value):>10}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total": self.total, "per_device": self.per_device()}


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


# -- the terms ----------------------------------------------------------------------------------------

def _linear_like(m: nn.Module) -> bool:
    return type(m) is nn.Linear or type(m).__module__.startswith("bitsandbytes")


OFFLOADABLE = (nn.Linear, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)  # what comfy.ops has a castable twin of


def offloadable_bytes(module: nn.Module, quantization: Quantization | None, keep) -> int:
    """Bytes of the tensors of plain torch layers (quantized linear layers excluded): what ComfyUI's lowvram path
    can leave on the CPU."""
    total = 0
    for name, m in module.named_modules():
        if type(m) in OFFLOADABLE and not (type(m) is nn.Linear and quantization is not None and not kept(name, keep)):
            own = (*m.parameters(recurse=False), *m.buffers(recurse=False))
            total += sum(t.numel() * t.element_size() for t in own)
    return total


def weight_bytes(module: nn.Module, quantization: Quantization | None, keep,
                 compute_bytes: int) -> tuple[int, int, int]:
    """(bytes, of them in quantized layers, the largest quantized layer of the decoder blocks dequantized) of a
    module from its shapes: linear layers outside ``keep`` at ``quantization`` (or full precision in the compute
    dtype), every other tensor at its own dtype, each tensor once."""
    total = quantized = largest = 0
    seen: set[int] = set()
    # a linear layer whose weight is another module's (a head tied to the embedding) stays that tensor
    tied = {id(t) for m in module.modules() if not _linear_like(m) for t in m.parameters(recurse=False)}
    for name, m in module.named_modules():
        own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
        if _linear_like(m) and id(m.weight) not in tied and \
                (quantization is not None and not kept(name, keep) or type(m) is not nn.Linear):
            q = quantization if quantization is not None and not kept(name, keep) else None
            size = linear_bytes(m.out_features, m.in_features, m.bias is not None, q, compute_bytes)
            total += size
            if q is not None:
                quantized += size
                if "layers." in name:  # run every pass (a text head or tower the sampler never calls is not)
                    largest = max(largest, m.out_features * m.in_features * compute_bytes)
            seen.update(id(t) for t in own)
            continue
        for t in own:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total, quantized, largest


def activation_bytes(dims: dict, codebook: int, queries: int, slots: int, rows: int, dequantized: int) -> int:
    """The widest pass, 4 bytes a value: per row, ``queries`` x (6 hidden + 3 MLP + 2 x heads x slots of attention
    scores + 2 x logits over the larger of the vocabulary and the codebook), and the sampler's buffers per image
    (probabilities, a sorted copy, cumulative sum, mask, indices); plus one quantized layer dequantized."""
    d = {**dims, "vocab": max(dims["vocab"], codebook)}
    per_row = queries * (6 * d["dim"] + 3 * d["ffn"] + 2 * d["heads"] * slots + 2 * d["vocab"]) * 4
    sampler = queries * codebook * (4 * 4 + 8)
    return rows * per_row + (rows // 2 or 1) * sampler + dequantized


def vq_decode_bytes(decode: Callable[[torch.Tensor], torch.Tensor] | None, images: int, grid: tuple[int, int]) -> int:
    """The image decoder on the meta device for ``images`` code grids: its largest operation (inputs + output,
    weights excluded) plus the largest activation seen (kept alive beside it, as a residual is)."""
    if decode is None:
        return 0
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Peak(TorchDispatchMode):
        op = biggest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            size = lambda ts: sum(t.numel() * t.element_size() for t in tree_leaves(ts)  # noqa: E731
                                  if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter))
            produced = 0 if func._schema.name.endswith("_") else size(out)  # an in-place op writes its input
            Peak.op = max(Peak.op, size((args, kwargs)) + produced)
            Peak.biggest = max(Peak.biggest, produced)
            return out

    codes = torch.zeros(images, *grid, dtype=torch.long, device="meta")
    with torch.no_grad(), Peak():
        decode(codes)
    return Peak.op + Peak.biggest


# -- a plan -------------------------------------------------------------------------------------------

def resolve_config(subject: Subject, cols: int, **chosen) -> ZipARConfig:
    """The decoding settings a face would use: each value chosen, else the family's (variant's) default; a default
    window clipped to the grid (:func:`~.config.resolve`, the one resolution)."""
    return resolve(subject.defaults, cols, chosen, warn=False)


def plan(subject: Subject, layout: TokenLayout, config: ZipARConfig, batch: int, device: str = "cuda", *,
         quantization=_KEEP, decode_images: int | None = None) -> MemoryPlan:
    """The plan of ``subject`` decoding ``batch`` images of ``layout`` with ``config`` on ``device``; quantization
    (default: the subject's own) may be another one, to plan what a setting would change."""
    config = resolve(subject.defaults, layout.cols, config.chosen(), warn=False)  # unset: the family's defaults
    q = subject.quantization if quantization is _KEEP else parse(quantization)
    keep = subject.keep + (tuple(q.skip) if q is not None else ())
    compute = torch.empty(0, dtype=subject.dtype).element_size()
    weights, quantized, dequantized = weight_bytes(subject.transformer, q, keep, compute)
    parts = {"transformer, quantized layers": quantized, "transformer, the rest": weights - quantized}
    offloadable = offloadable_bytes(subject.transformer, q, keep)
    if q is None:  # unquantized linear layers counted at the compute dtype, as weight_bytes does
        offloadable = min(offloadable, weights)
    for name, module in subject.parts.items():
        size = weight_bytes(module, None, (), compute)[0]
        parts[name] = size
        weights += size
        offloadable += offloadable_bytes(module, None, ())
    rows = batch * (2 if config.guidance else 1)
    slots = layout.num_slots + 1  # the sampler's cache: every slot and a scratch slot
    queries = widest_pass(layout, config)
    kind = str(device).split(":")[0]
    full = weight_bytes(subject.transformer, None, (), compute)[0]
    return MemoryPlan(
        model=subject.name, device=str(device), dtype=str(subject.dtype).replace("torch.", ""),
        quantization=str(q) if q is not None else "none", mode=config.mode, window=config.window_for(layout.cols),
        batch=batch, guidance=config.guidance, grid=(layout.rows, layout.cols), widest_pass=queries, weights=weights,
        kv_cache=subject.kv_cache(rows, slots, subject.dtype),
        activations=activation_bytes(subject.dims, subject.codebook, queries, slots, rows,
                                     dequantized if q is not None else 0),
        vq_decode=subject.vq_decode_bytes(decode_images or batch, (layout.rows, layout.cols)),
        runtime=CUDA_RUNTIME if kind == "cuda" else 0, host_loading=full, weight_parts=parts, offloadable=offloadable)


# -- the check every face runs ----------------------------------------------------------------------

def free_bytes(device) -> int | None:
    """Free memory of a device (CUDA: mem_get_info; CPU: MemAvailable); None when unknown."""
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


def needed(plan: MemoryPlan, loaded: bool) -> int:
    """Bytes still to find on the device: the whole plan, or once the weights are loaded what decoding adds."""
    return plan.total - (plan.weights + plan.runtime if loaded else 0)


def alternatives(replan: Callable[..., MemoryPlan], current: MemoryPlan, free: int,
                 loaded: bool = False) -> list[tuple[str, object, int]]:
    """Settings that would fit ``free`` bytes: (setting, value, bytes needed) for each quantization that fits (the
    lightest first; not once the weights are loaded), and the largest batch that fits with the current weights."""
    out = []
    for method in () if loaded else ("int8", "nf4"):
        if method != current.quantization:
            p = replan(quantization=Quantization(method))
            if p.total <= free:
                out.append(("quantization", method, p.total))
    low, high = 0, current.batch  # the largest batch that fits: the plan grows with the batch
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if needed(replan(batch=mid), loaded) <= free else (low, mid)
    if low >= 1:
        out.append(("batch_size", low, needed(replan(batch=low), loaded)))
    return out


def check(current: MemoryPlan, replan: Callable[..., MemoryPlan], free: int | None, what: str,
          offload: str | None = None, batch_setting: str = "batch_size", loaded: bool = False) -> None:
    """Refuse a plan whose total exceeds ``free`` bytes (None: unknown, nothing is refused), before any weights
    load (``loaded``: they are, and ``free`` is what is left beside them): one :class:`~.errors.SettingError` with
    the plan and what would fit (a quantization, a smaller batch, and ``offload``, the face's own way to offload,
    when it has one), each named in the face's words."""
    if free is None or needed(current, loaded) <= free:
        return
    options = alternatives(replan, current, free, loaded)
    said = []
    for setting, value, total in options:
        name = "{other:quantization}" if setting == "quantization" else "{other:" + batch_setting + "}"
        said.append(f"{name} {value} ({gib(total)})")
    if offload:
        said.append(offload)
    fix = ("; it would fit with " + " or ".join(said)) if said else \
        "; nothing smaller fits: use a device with more memory or a smaller image"
    first = options[0][0] if options else "quantization"
    beside = " beside the loaded weights" if loaded else ""
    raise SettingError(first if first == "quantization" else batch_setting,
                       f"{what} needs {current.summary()}, but {gib(free)} are free{beside}{fix}")

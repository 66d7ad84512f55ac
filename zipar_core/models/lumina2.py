"""Lumina-mGPT 2.0 behind the ZipAR protocol: transformers' Chameleon (as Lumina-mGPT) with the MoVQGAN decoder.

Read from Alpha-VLLM/Lumina-mGPT-2.0 (``generate_examples/generate.py``, ``inference_solver.py``,
``data/item_processor.py``, ``data/convertsation.py``, ``xllmx/model/tokenizer.py``).

The same as Lumina-mGPT (``lumina.py``, whose code this reuses): the architecture (Alpha-VLLM's fork of Chameleon,
q/k norms per model-parallel shard), the prompt ``<bos>Generate an image of {w}x{h} according to the following
prompt:\\n{prompt}<reserved08706>`` (one human turn of its conversation template), the image
``<racm3:break> <reserved{8800+h/32}> <reserved{8800+w/32}>``, rows of (w tokens + ``<reserved08799>``),
``<eoss>``; the header is fixed here (the prompt names the size, ZipAR needs the grid before the first pass);
the unconditional branch is the image part alone, from position 0; the training sizes (w*h <= 768^2 in 32-px
steps, aspect ratio <= 4); logits from ``lm_head`` on the image-token rows (transformers' forward would mask them).

What differs:

- **vocabulary**: a Qwen2.5-style text vocabulary in ``tokenizer.json``; image code c is id 155000 + c (16,384
  codes); every special id (BOS, ``<racm3:break>``, the size and end-of-line tokens) is read from the tokenizer by
  name, and BOS is the tokenizer's BOS or, as Qwen's has none, its EOS (the original's ``Tokenizer.bos_id``).
- **image tokenizer**: MoVQGAN 270M, 8 px per token (``movqgan.py``): 768 px is 96 x 96 tokens, and a size token
  counts 4 x 4 tokens.
- **guidance**: its scale changes along the image (:func:`guidance_schedule`); the sampler applies it per token.
- **defaults**: cfg 4.0, image top-k 4096, temperature 1.0 (its README and ``scripts/sample.sh``).
- **dual-panel tasks** (``generate.py --task depth|canny|hed|openpose``: the image and its depth / canny / HED /
  pose map as the upper and lower half): another instruction, chosen here by a prompt that starts with
  ``<depth>``, ``<canny>``, ``<hed>`` or ``<openpose>`` (the name of the original's ``--task``), the same in every
  face.
"""
from __future__ import annotations

import functools
import os
import re

import torch
from torch.nn import functional as F

from ..errors import SettingError
from ..loading import LoadOptions
from ..protocol import Conditioning, Request
from .hf_common import HFAdapter, attach_image_ids, encode, model_attention
from .lumina import PATCH, PROMPT_TEMPLATE, LuminaAdapter
from .lumina2_original import IMAGE_TOKEN_BASE, PUBLISHED

PIXELS_PER_TOKEN = 8  # MoVQGAN: three 2x upsamplings
CODEBOOK = 16384  # the original's image tokens: ids 155000 .. 171383
SEP = "<reserved08706>"  # its conversation template's end of a turn
SPECIALS = {"boi": "<racm3:break>", "eoi": "<eoss>", "eol": "<reserved08799>"}
DUAL_PANEL = ("Generate a dual-panel image of {width}x{height} where the <lower half> displays a <{panel}>, while the "
              "<upper half> retains the original image for direct visual comparison:\n{prompt}")
TASKS = {"depth": "depth map", "canny": "canny edge map", "hed": "hed edge map", "openpose": "pose estimation map"}
_TASK = re.compile(r"^\s*<([A-Za-z_]+)>\s*(.*)$", re.S)
MIN_SCALE = 4.0  # the floor of its guidance scale


def size_token(n: int) -> str:
    """The size token of n 32-px units (FlexARItemProcessor.get_n_grids_token)."""
    return f"<reserved{8800 + n:05d}>"


def split_task(prompt: str) -> tuple[str | None, str]:
    """(task or None, the prompt's text): a prompt starting with ``<depth>``, ``<canny>``, ``<hed>`` or
    ``<openpose>`` asks for that dual-panel task; another ``<name>`` at the start is refused."""
    m = _TASK.match(prompt)
    if m is None:
        return None, prompt
    if m.group(1) not in TASKS:
        raise SettingError("prompt", f"{{name}} starts with <{m.group(1)}>, which is no Lumina-mGPT 2.0 task: start it "
                                     f"with one of {', '.join(f'<{t}>' for t in TASKS)} for a dual-panel image, or "
                                     "with the text for a plain one")
    return m.group(1), m.group(2)


def instruction(prompt: str, width: int, height: int, task: str | None = None) -> str:
    """The human turn the original's generate.py writes: text-to-image, or the dual-panel task (the image in the
    upper half, its map in the lower half)."""
    if task is None:
        return PROMPT_TEMPLATE.format(width=width, height=height, prompt=prompt)
    return DUAL_PANEL.format(width=width, height=height, panel=TASKS[task], prompt=prompt)


def guidance_schedule(guidance_scale: float, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols,) float32: the guidance scale Lumina-mGPT 2.0 applies to each image token, by raster index.

    Its ``LLMImageStartTriggeredUnbatchedClassifierFreeGuidanceLogitsProcessor`` (``create_logits_processor``)
    runs at every generated token once the two size tokens follow ``<racm3:break>``: with n the tokens generated
    since the image start (the size tokens, then image and end-of-line tokens), it updates its scale in place,
    ``s = max(4.0, s * (1 - n / D))``, and guides with it, unless the scale is exactly 1.0 (then never). D is
    ``h_latent_dim * w_latent_dim`` = (2 h/32) (2 w/32), Lumina-mGPT's latent size (16 px per token) that it kept
    for 2.0's 8-px tokens: rows * cols / 4. So a scale above 4 decays to 4 within the first rows, and one below 4
    is 4 from the first token on. End-of-line tokens update it too (their logits are forced)."""
    if guidance_scale == 1.0:
        return torch.ones(rows * cols)
    latent = (rows * PIXELS_PER_TOKEN // PATCH * 2) * (cols * PIXELS_PER_TOKEN // PATCH * 2)
    scale, out = float(guidance_scale), []
    for k in range(rows * (cols + 1)):  # k: the slot predicted (image tokens and end-of-line tokens), n = k + 2
        scale = max(MIN_SCALE, scale * (1 - (k + 2) / latent))
        if k % (cols + 1) < cols:
            out.append(scale)
    return torch.tensor(out, dtype=torch.float32)


class Lumina2Adapter(LuminaAdapter):
    family = "lumina2"
    title = "Lumina-mGPT 2.0"
    sized_title = "Lumina-mGPT 2.0 ({size} px)"

    def __init__(self, model, tokenizer, vqgan=None, target_size: int | None = 768, codebook_size: int | None = None):
        """model: a ChameleonForConditionalGeneration of Lumina-mGPT 2.0; tokenizer: its tokenizer.json (its special
        ids are read from it); vqgan: the MoVQGANDecoder (None: decode() explains how to get it); target_size: the
        training size (None: any multiple of 32 px that fits the context); codebook_size: the decoder's, else 16,384."""
        model_attention(model)
        if tokenizer is None:
            raise ValueError(f"{self.title} needs its tokenizer (tokenizer.json, {PUBLISHED}): its special token ids "
                             "are read from it")
        self.model, self.tokenizer, self.vqgan, self.target_size = model.eval(), tokenizer, vqgan, target_size
        self.backbone, self.text_config, self.pixels_per_token = model.model, model.config, PIXELS_PER_TOKEN
        self.codebook_size = codebook_size or (vqgan.config.n_embed if vqgan is not None else CODEBOOK)
        if IMAGE_TOKEN_BASE + self.codebook_size > model.config.vocab_size:
            raise ValueError(f"a vocabulary of {model.config.vocab_size} ids has no room for {self.codebook_size} "
                             f"image tokens from id {IMAGE_TOKEN_BASE}: this is not a {self.title} model")
        self.img2bpe = attach_image_ids(model, torch.arange(self.codebook_size) + IMAGE_TOKEN_BASE)  # get_image_token
        self.vocab = tokenizer.get_vocab()
        absent = [name for name in (*SPECIALS.values(), size_token(1)) if name not in self.vocab]
        if absent:
            raise ValueError(f"the tokenizer lacks {', '.join(absent)}: it is not {self.title}'s tokenizer.json")
        self.ids = {k: self.vocab[name] for k, name in SPECIALS.items()}
        self.eol_id = self.ids["eol"]
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.bos_id

    @classmethod
    def from_pretrained(cls, path_or_id: str, options: LoadOptions | None = None, *, tokenizer=None, vqgan=None,
                        target_size: int | None = None) -> Lumina2Adapter:
        """A folder or hub id of Alpha-VLLM/Lumina-mGPT-2.0 as published, or ZipAR's converted copy
        (``lumina2_original``). vqgan: the MoVQGAN file (movqgan_270M.ckpt) or its folder, or a MoVQGANDecoder;
        None looks in the model folder, its movqgan/270M/ subfolder and beside it. target_size: the training size
        (768, its README's); its sizes are those of Lumina-mGPT's item processor at that size."""
        from . import lumina2_original
        from .hub import read_config, snapshot

        options = options or LoadOptions()
        config = read_config(path_or_id, options.hub)
        folder = path_or_id if os.path.isdir(path_or_id) else snapshot(path_or_id, options.hub)
        model, tok, decoder = lumina2_original.load(folder, config, options, tokenizer, vqgan)
        return cls(model, tok, decoder, target_size=768 if target_size is None else target_size)

    def save_pretrained(self, folder: str) -> list[str]:
        """transformers' Chameleon layout (q/k norms one row per head, no image encoder) with the tokenizer, and the
        MoVQGAN decoder as ``movqgan.safetensors`` (no pickle)."""
        from .movqgan import save_safetensors

        HFAdapter.save_pretrained(self, folder)
        if self.vqgan is not None:
            save_safetensors(self.vqgan, os.path.join(folder, "movqgan.safetensors"))
        return sorted(os.listdir(folder))

    @classmethod
    def from_components(cls, transformer, vqvae=None, tokenizer=None, target_size: int | None = 768,
                        **_) -> Lumina2Adapter:
        from .lumina2_original import drop_image_encoder

        drop_image_encoder(transformer)  # a saved pipeline's transformer gets a random one from transformers
        return cls(transformer, tokenizer, vqvae, target_size=target_size)

    # -- conditioning --------------------------------------------------------------------------------
    def check(self, **request) -> Request:
        checked = super().check(**request)
        for prompt in checked.prompts or ():
            split_task(prompt)  # an unknown task is refused before any model work
        return checked

    def image_header(self, rows: int, cols: int) -> list[int]:
        """``<racm3:break>`` and the size tokens of height, then width, in 32-px units (4 tokens each)."""
        header = [self.ids["boi"]]
        for name, tokens in (("height", rows), ("width", cols)):
            token = size_token(tokens * self.pixels_per_token // PATCH)
            if token not in self.vocab:
                raise SettingError(name, f"{self.title}'s tokenizer has no size token {token} for a {name} of "
                                         f"{tokens * self.pixels_per_token} px; change {{name}}")
            header.append(self.vocab[token])
        return header

    def prompt_ids(self, prompt: str, height: int, width: int, task: str | None = None) -> list[int]:
        """BOS + the human turn + the end-of-turn token, tokenized as one string (the original's process_item)."""
        return encode(self.tokenizer, instruction(prompt, width, height, task) + SEP, self.bos_id)

    def token_rows(self, request: Request, guided: bool):
        """Conditional rows: prompt + image header; unconditional: the header alone (the original's), or the
        negative prompt in the same instruction (the same task) as its prompt."""
        rows, cols = request.rows, request.cols
        height, width = rows * self.pixels_per_token, cols * self.pixels_per_token
        header = self.image_header(rows, cols)
        tasks = [split_task(p) for p in request.prompts]
        cond = [self.prompt_ids(text, height, width, task) + header for task, text in tasks]
        if not guided:
            return cond, None
        if request.negative_prompts is None:
            return cond, [list(header) for _ in cond]
        return cond, [self.prompt_ids(neg, height, width, task) + header
                      for (task, _), neg in zip(tasks, request.negative_prompts)]

    def conditioning_from_ids(self, cond_ids, uncond_ids, rows: int, cols: int) -> Conditioning:
        cond = super().conditioning_from_ids(cond_ids, uncond_ids, rows, cols)
        cond.guidance_schedule = functools.partial(guidance_schedule, rows=rows, cols=cols)
        return cond

    # -- model hooks ---------------------------------------------------------------------------------
    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The image-token rows of lm_head only (16,384 of 171,385: a tenth of the full head's work)."""
        head = self.model.lm_head
        if type(head) is not torch.nn.Linear:  # another layer type (a quantized one): the full head, then the rows
            return super()._logits(hidden)
        return F.linear(hidden, head.weight[IMAGE_TOKEN_BASE: IMAGE_TOKEN_BASE + self.codebook_size]).float()

    def missing_decoder(self) -> str | None:
        if self.vqgan is None:
            return (f"this {self.title} model has no image decoder: MoVQGAN 270M (movqgan_270M.ckpt, "
                    "huggingface.co/ai-forever/MoVQGAN) is needed; put it in the model folder or give it with {name}")
        return None

"""Lumina-mGPT (Chameleon architecture) behind the ZipAR protocol, through transformers' Chameleon.

Prompt (Lumina-mGPT's ``FlexARInferenceSolver`` with one human turn):
``<bos>Generate an image of {w}x{h} according to the following prompt:\\n{prompt}<reserved08706>``, then
the image: ``<racm3:break>`` (8197), the size tokens ``<reserved{8800+n}>`` (id 8804+n, n = side / 32)
for height then width, rows of (w visual tokens + EOL ``<reserved08799>`` = 8803), ``<eoss>`` (8196).
The three image-header tokens are fixed here (the model would be forced to emit them anyway), so they
are part of the prefix. 768 px -> 48 x 48 tokens, 16 px per token.

``ChameleonForConditionalGeneration.forward`` sets every image-token logit to the dtype's minimum (it is
a text-only head in transformers), so the adapter runs ``model.model`` and ``lm_head`` itself and keeps
only the visual-token columns, mapped to VQ codes by the model's ``ChameleonImageVocabularyMapping``.

Guidance follows Lumina's ``LLMImageStartTriggered...`` processor: the unconditional row starts at the
image-start token (``<racm3:break> h w`` and the image so far), or is a negative prompt in the template.
Defaults: cfg 3.0, image top-k 2000.

Chameleon's VQGAN decoder is not in transformers: see ``chameleon_vqgan``.
"""
from __future__ import annotations

import os
import re

import torch

from ..errors import SettingError
from ..loading import LoadOptions
from ..protocol import Request
from .hf_common import VocabularyImageAdapter, attach_image_ids, encode, load_hf, load_tokenizer, model_attention

PROMPT_TEMPLATE = "Generate an image of {width}x{height} according to the following prompt:\n{prompt}"
PATCH = 32  # pixels per size-token unit: the size tokens count 32 px (2 x 2 visual tokens)
# Chameleon vocabulary names of Lumina-mGPT's image tokens; ids are read from the vocabulary map when it has them.
TOKENS = {"boi": ("<racm3:break>", 8197), "eoi": ("<eoss>", 8196), "eol": ("<reserved08799>", 8803),
          "sep": ("<reserved08706>", 8710)}
SIZE_TOKEN, SIZE_TOKEN_BASE = "<reserved08800>", 8804  # the size token of n units is the id of <reserved08800> + n


def generate_crop_size_list(num_patches: int, patch_size: int = PATCH, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """(width, height) pairs Lumina-mGPT was trained on at a target size (its item processor's list): the w x h
    grids of 32-px patches along w*h <= (target/32)^2, each as tall as that allows for its width (w*h above 91% of
    the target area at 768), with aspect ratio at most 4."""
    sizes, wp, hp = [], num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch_size, hp * patch_size))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def supported_sizes(target_size: int) -> list[tuple[int, int]]:
    """(width, height) choices of a Lumina-mGPT checkpoint trained at ``target_size`` (512, 768, 1024)."""
    return generate_crop_size_list((target_size // PATCH) ** 2)


def guess_target_size(path_or_id: str) -> int | None:
    """Lumina-mGPT checkpoints carry their training size in the name (Lumina-mGPT-7B-768, ...-1024)."""
    m = re.search(r"(?<!\d)(512|768|1024)(?!\d)", os.path.basename(os.path.normpath(str(path_or_id))))
    return int(m.group(1)) if m else None


class LuminaAdapter(VocabularyImageAdapter):
    family = "lumina"
    decoder_setting = "vqgan"
    title = "Lumina-mGPT"  # in messages
    sized_title = "Lumina-mGPT-{size}"  # a checkpoint of one training size, in messages
    eol = True
    keep_unquantized = ("lm_head", "model.vqmodel")  # quantization keeps the image head the sampler reads, and the VQ

    def __init__(self, model, tokenizer=None, vqgan=None, target_size: int | None = 768):
        model_attention(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.vqgan = vqgan  # ChameleonVQGANDecoder or None (decode() then explains how to get it)
        self.target_size = target_size
        self.backbone = model.model
        self.text_config = model.config
        vm = model.model.vocabulary_mapping
        self.codebook_size = len(vm.img2bpe)
        if self.codebook_size == 0 or sorted(vm.img2bpe) != list(range(self.codebook_size)):
            raise ValueError("Chameleon config has no usable vocabulary_map of IMGIMG image tokens")
        self.img2bpe = attach_image_ids(model, vm.img2bpe_mapping_tensor)  # (codebook,) code -> vocabulary id
        # Every special id as the original code reads it: from the tokenizer (Lumina's converter never sets
        # config.bos_token_id, whose default 1 is <pad> in its vocabulary), else config.vocabulary_map.
        vocab = {**(model.config.vocabulary_map or {}), **(tokenizer.get_vocab() if tokenizer is not None else {})}
        self.ids = {k: vocab.get(name, default) for k, (name, default) in TOKENS.items()}
        self.size_base = vocab.get(SIZE_TOKEN, SIZE_TOKEN_BASE)
        self.eol_id = self.ids["eol"]
        self.bos_id = _special(tokenizer, "bos_token_id", model.config.bos_token_id)
        self.pad_id = _special(tokenizer, "pad_token_id", model.config.pad_token_id, self.bos_id)
        self.pixels_per_token = 16  # VQGAN: 16 px per token (2 per 32-px size unit)

    @classmethod
    def from_pretrained(cls, path_or_id: str, options: LoadOptions | None = None, *, tokenizer=None, vqgan=None,
                        target_size: int | None = None) -> LuminaAdapter:
        """A folder or hub id in Alpha-VLLM's layout (Alpha-VLLM/Lumina-mGPT-7B-768, converted in memory:
        ``lumina_original``) or transformers' Chameleon layout. vqgan: a ChameleonVQGANDecoder, or a path (file
        or folder) holding vqgan.ckpt + vqgan.yaml or a safetensors conversion; None looks in and beside the
        model folder. target_size: the training size; None reads it from the name (…-768), else any multiple of
        32 that fits the context is allowed."""
        from ..checkpoints import find_weight_files
        from . import lumina_original
        from .chameleon_vqgan import ChameleonVQGANDecoder, load_chameleon_vqgan
        from .hub import read_config, snapshot

        options = options or LoadOptions()
        size = target_size if target_size is not None else guess_target_size(path_or_id)
        config = read_config(path_or_id, options.hub)
        local = os.path.isdir(path_or_id)
        weights = find_weight_files(path_or_id, "Lumina-mGPT", lumina_original.PUBLISHED) if local else None
        decoder = vqgan if isinstance(vqgan, ChameleonVQGANDecoder) else None
        if lumina_original.is_original(config, weights):
            folder = path_or_id if local else snapshot(path_or_id, options.hub)
            model, tok, found = lumina_original.load(folder, config, options, tokenizer,
                                                     None if decoder is not None else vqgan)
            return cls(model, tok, decoder or found, size)
        from transformers import ChameleonForConditionalGeneration

        model = load_hf(ChameleonForConditionalGeneration, path_or_id, options, what="Lumina-mGPT",
                        published=lumina_original.PUBLISHED, family=cls.family)
        if decoder is None:
            where = vqgan or (path_or_id if local else None)
            try:
                decoder = load_chameleon_vqgan(where, device=model.device) if where else None
            except FileNotFoundError:
                if vqgan is not None:  # asked for explicitly: say so
                    raise
        return cls(model, load_tokenizer(path_or_id, tokenizer, options.hub), decoder, size)

    def save_pretrained(self, folder: str) -> list[str]:
        """transformers' Chameleon layout (q/k norms one row per head, the image encoder inside) plus the VQGAN
        decoder as ``vqgan.safetensors`` with its config in the metadata (no pickle, no yaml needed)."""
        super().save_pretrained(folder)
        if self.vqgan is not None:
            from .chameleon_vqgan import save_safetensors

            save_safetensors(self.vqgan, os.path.join(folder, "vqgan.safetensors"))
        return sorted(os.listdir(folder))

    def components(self) -> tuple[dict, dict]:
        """(modules, options) for a pipeline; ``from_components`` builds the adapter back from them."""
        return ({"transformer": self.model, "vqvae": self.vqgan, "tokenizer": self.tokenizer},
                {"target_size": self.target_size})

    @classmethod
    def from_components(cls, transformer, vqvae=None, tokenizer=None, target_size: int | None = 768,
                        **_) -> LuminaAdapter:
        return cls(transformer, tokenizer, vqvae, target_size=target_size)

    # -- conditioning --------------------------------------------------------------------------------
    def grid_for(self, height: int | None = None, width: int | None = None, **size_options) -> tuple[int, int]:
        """(rows, cols) for a pixel size; None takes the checkpoint's training size (768 when unknown).
        Refuses sizes the checkpoint cannot make."""
        self._no_size_options(size_options)
        height, width = height or self.target_size or 768, width or self.target_size or 768
        for name, side in (("height", height), ("width", width)):
            if side <= 0 or side % PATCH:
                raise SettingError(name, f"{self.title} cannot make {width}x{height}: both sides must be positive "
                                         f"multiples of {PATCH} px (its size tokens count 32-px units); change {{name}}")
        if self.target_size is not None and (width, height) not in supported_sizes(self.target_size):
            sizes = supported_sizes(self.target_size)
            near = sorted(sizes, key=lambda s: abs(s[0] - width) + abs(s[1] - height))[:4]
            raise SettingError("width", f"{self.sized_title.format(size=self.target_size)} was not trained for "
                                        f"{width}x{height}: its sizes are the 32-px steps with w*h just under "
                                        f"{self.target_size}^2 and aspect ratio <= 4, e.g. "
                                        f"{', '.join(f'{w}x{h}' for w, h in near)}; change {{other:width}} and "
                                        "{other:height}")
        return height // self.pixels_per_token, width // self.pixels_per_token

    def image_header(self, rows: int, cols: int) -> list[int]:
        return [self.ids["boi"], self.size_base + rows // 2, self.size_base + cols // 2]

    def prompt_ids(self, prompt: str, height: int, width: int) -> list[int]:
        text = PROMPT_TEMPLATE.format(width=width, height=height, prompt=prompt)
        return encode(self.tokenizer, text, self.bos_id) + [self.ids["sep"]]

    def token_rows(self, request: Request, guided: bool):
        rows, cols = request.rows, request.cols
        height, width = rows * self.pixels_per_token, cols * self.pixels_per_token
        header = self.image_header(rows, cols)
        cond = [self.prompt_ids(p, height, width) + header for p in request.prompts]
        if not guided:
            return cond, None
        if request.negative_prompts is not None:
            return cond, [self.prompt_ids(n, height, width) + header for n in request.negative_prompts]
        return cond, [list(header) for _ in cond]  # unconditional: the image header alone

    # -- model hooks ---------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) -> (B, 3, 16H, 16W) in [-1, 1] with Chameleon's VQGAN decoder."""
        missing = self.missing_decoder()
        if missing:
            raise SettingError("vqgan", missing)
        return self.vqgan(codes)

    def missing_decoder(self) -> str | None:
        if self.vqgan is None:
            return ("this Lumina-mGPT model has no VQGAN decoder: Chameleon's vqgan.ckpt + vqgan.yaml (Meta's "
                    "Chameleon release, tokenizer/ folder) are needed; put them in the model folder or give them "
                    "with {name}")
        return None


def _special(tokenizer, attribute: str, *fallbacks):
    """A special token id from the tokenizer (``bos_token_id``, ...), else the first fallback that is set."""
    value = getattr(tokenizer, attribute, None) if tokenizer is not None else None
    return next((v for v in (value, *fallbacks) if v is not None), None)

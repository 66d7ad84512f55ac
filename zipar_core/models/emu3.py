"""Emu3-Gen behind the ZipAR protocol, through transformers' ``Emu3ForConditionalGeneration``.

Sequence: ``<bos>{prompt}<|image start|>{h}*{w}<|image token|>``, then h rows of w visual tokens each
followed by the end-of-row token ``<|extra_200|>`` (then EOF, EOI, EOS, which ZipAR does not need). The
EOL is known in advance, so the sampler feeds it at its slot and no row start needs a placeholder.
Codes <-> vocabulary ids go through the model's own ``Emu3ImageVocabularyMapping``; logits are the LM
head's columns of the visual tokens, so sampling never leaves the image vocabulary (docs/design.md, rule 6).

Guidance: the unconditional row is the negative prompt in the same template (``<bos>{negative}<|image
start|>{h}*{w}<|image token|>``, an empty negative prompt when none is given), as in BAAI's Emu3 code.
transformers' ``generate(negative_prompt_ids=...)`` runs that row as a separate stream; here it shares
the forward with the conditional rows, left-padded, with its own positions, which computes the same.
"""
from __future__ import annotations

import os

import torch

from ..errors import SettingError
from ..loading import LoadOptions
from ..protocol import Request
from .hf_common import VocabularyImageAdapter, attach_image_ids, encode, load_hf, load_tokenizer, model_attention

DEFAULT_AREA = 720 * 720  # Emu3Processor's image_area default (518400): a 90 x 90 grid at 1:1
SPECIAL = {"boi": "<|image start|>", "wrapper": "<|image token|>"}


def calculate_generate_size(ratio: str, image_area: int, spatial_factor: int) -> tuple[int, int]:
    """Token grid (rows, cols) for an aspect ratio "w:h" and a pixel area; the formula of
    ``Emu3Processor.calculate_generate_size`` (kept here so prepare() works without the image processor,
    which needs PIL; a test checks the two agree)."""
    width, height = map(int, ratio.split(":"))
    target_ratio = (image_area / (width * height)) ** 0.5
    return round(height * target_ratio / spatial_factor), round(width * target_ratio / spatial_factor)


class Emu3Adapter(VocabularyImageAdapter):
    family = "emu3"
    eol = True
    keep_unquantized = ("lm_head", "model.vqmodel")  # quantization keeps the image head the sampler reads, and the VQ

    def __init__(self, model, tokenizer=None):
        model_attention(model)
        self.model = model.eval()  # Emu3's attention_dropout defaults to 0.1
        self.tokenizer = tokenizer
        self.backbone = model.model.text_model
        self.text_config = model.config.text_config
        self.vq = model.model.vqmodel
        self.pixels_per_token = self.vq.spatial_scale_factor  # 8 px per token
        vm = model.vocabulary_mapping
        self.codebook_size = len(vm.img2bpe)
        if sorted(vm.img2bpe) != list(range(self.codebook_size)):
            raise ValueError("Emu3 vocabulary map: visual tokens must cover codes 0..N-1")
        self.img2bpe = attach_image_ids(model, vm.img2bpe_mapping_tensor)  # (codebook,) code -> vocabulary id
        self.eol_id = vm.eol_token_id
        vocab = model.config.vocabulary_map
        self.boi = getattr(tokenizer, "boi_token", None) or SPECIAL["boi"]
        self.wrapper = getattr(tokenizer, "image_wrapper_token", None) or SPECIAL["wrapper"]
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        self.bos_id = self.text_config.bos_token_id if self.bos_id is None else self.bos_id
        self.pad_id = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = self.text_config.pad_token_id if self.pad_id is None else self.pad_id
        if self.eol_id is None or self.boi not in vocab or self.wrapper not in vocab:
            raise ValueError("Emu3 vocabulary map lacks <|extra_200|>, <|image start|> or <|image token|>")

    @classmethod
    def from_pretrained(cls, path_or_id: str, options: LoadOptions | None = None, *, tokenizer=None,
                        vision_tokenizer: str | None = None) -> Emu3Adapter:
        """A folder or hub id in transformers' layout (BAAI/Emu3-Gen-hf) or BAAI's own (BAAI/Emu3-Gen with its
        vision tokenizer, converted in memory: ``emu3_original``). vision_tokenizer: the Emu3-VisionTokenizer
        folder or hub id, when it is neither inside nor beside the model folder."""
        from . import emu3_original
        from .hub import read_config, snapshot

        options = options or LoadOptions()
        config = read_config(path_or_id, options.hub)
        if emu3_original.is_original(config):
            local = os.path.isdir(path_or_id)
            folder = path_or_id if local else snapshot(path_or_id, options.hub)
            model, tok = emu3_original.load(folder, config, options, tokenizer, vision_tokenizer, from_hub=not local)
            return cls(model, tok)
        if vision_tokenizer is not None:
            raise SettingError("vision_tokenizer", f"{path_or_id} is in transformers' layout, which holds the VQ model "
                                                   "itself: leave {name} unset")
        from transformers import Emu3ForConditionalGeneration

        model = load_hf(Emu3ForConditionalGeneration, path_or_id, options, what="Emu3-Gen",
                        published="huggingface.co/BAAI/Emu3-Gen-hf", family=cls.family)
        return cls(model, load_tokenizer(path_or_id, tokenizer, options.hub))

    def components(self) -> tuple[dict, dict]:
        """(modules, options) for a pipeline; ``from_components`` builds the adapter back from them."""
        return {"transformer": self.model, "tokenizer": self.tokenizer}, {}

    @classmethod
    def from_components(cls, transformer, tokenizer=None, **_) -> Emu3Adapter:
        return cls(transformer, tokenizer)

    # -- conditioning --------------------------------------------------------------------------------
    def grid_for(self, height: int | None = None, width: int | None = None, ratio: str | None = None,
                 image_area: int | None = None) -> tuple[int, int]:
        """(rows, cols): from an exact pixel size (multiples of 8), or from ratio + area as the processor does."""
        if height is not None or width is not None:
            if height is None or width is None:
                raise SettingError("height" if height is None else "width",
                                   "give both {other:height} and {other:width} (or ratio and image_area)")
            for name, side in (("height", height), ("width", width)):
                if side % self.pixels_per_token or side <= 0:
                    raise SettingError(name, f"Emu3 cannot make {width}x{height}: both sides must be positive "
                                             f"multiples of {self.pixels_per_token} px (one visual token each); change {{name}}")
            return height // self.pixels_per_token, width // self.pixels_per_token
        try:
            rows, cols = calculate_generate_size(ratio or "1:1", image_area or DEFAULT_AREA, self.pixels_per_token)
        except (ValueError, ZeroDivisionError):
            raise SettingError("ratio", f"{{name}} must read 'w:h' with positive whole numbers, got {ratio!r}") from None
        if rows < 1 or cols < 1:
            raise SettingError("image_area", f"ratio {ratio} with {{name}} {image_area} gives an empty {rows}x{cols} grid")
        return rows, cols

    def prompt_ids(self, prompt: str, rows: int, cols: int) -> list[int]:
        return encode(self.tokenizer, f"{prompt}{self.boi}{rows}*{cols}{self.wrapper}", self.bos_id)

    def token_rows(self, request: Request, guided: bool):
        rows, cols = request.rows, request.cols
        cond = [self.prompt_ids(p, rows, cols) for p in request.prompts]
        if not guided:
            return cond, None
        negatives = request.negative_prompts or [""] * len(cond)  # BAAI's code: the empty prompt
        return cond, [self.prompt_ids(n, rows, cols) for n in negatives]

    # -- model hooks ---------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) -> (B, 3, 8H, 8W) in [-1, 1]; the VQ decoder makes 4 frames, frame 0 is the image
        (``Emu3VQVAE.decode`` returns it for 3-D input)."""
        pixels = self.vq.decode(codes.to(self.vq.device))
        return pixels.float().clamp(-1, 1)

"""ZipAR VQ Decode: code grids -> ComfyUI IMAGE."""
from __future__ import annotations

DECODE_CHUNK = 4  # images per VQ decoder call: bounds the decoder's activation memory on large batches


def to_comfy_image(pixels):
    """(B, 3, H, W) in [-1, 1] -> ComfyUI IMAGE: float32 (B, H, W, 3) in [0, 1] on CPU."""
    return ((pixels.float() + 1) / 2).clamp_(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


class ZipARVQDecode:
    """Turns ZipAR codes into images with the model's own VQ decoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"codes": ("ZIPAR_CODES", {
            "tooltip": "Codes from ZipAR Sampler; they remember which model's VQ decoder turns them into pixels."})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"
    CATEGORY = "ZipAR/decode"
    DESCRIPTION = "Decode ZipAR VQ codes to images."
    SEARCH_ALIASES = ("zipar", "vq decode", "vqgan")

    def decode(self, codes):
        import torch

        from . import comfy_glue as glue

        adapter = codes.model.load()
        out = []
        with torch.no_grad():
            for chunk in codes.codes.split(DECODE_CHUNK):
                glue.interrupt_check()
                out.append(to_comfy_image(adapter.decode(chunk.to(adapter.device))))
        return (torch.cat(out),)

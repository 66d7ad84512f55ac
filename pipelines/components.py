"""diffusers components for the model parts that are not transformers models.

``DiffusionPipeline.from_pretrained`` can only rebuild a component whose class is a ``ModelMixin`` (or a
transformers ``PreTrainedModel``) bound at module level in an importable module; ``model_index.json``
records ``["zipar.pipelines.components", "<ClassName>"]`` for these. Each wrapper registers the fields of
the wrapped module's own config dataclass with ``register_to_config`` (so ``config.json`` is the model's
config) and holds the module unchanged under ``.model``: the ZipAR adapters take ``wrapper.model``, and the
state dict keys are the official ones behind a ``model.`` prefix.

Offload hooks (``enable_model_cpu_offload``) wrap ``forward`` only, and the adapters call the inner modules'
methods, so the pipeline moves a component onto the execution device itself before using it
(``ZipARPipeline._onload``).
"""
from __future__ import annotations

import dataclasses

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..zipar_core.models.chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig
from ..zipar_core.models.llamagen.gpt import LlamaGenConfig, LlamaGenTransformer
from ..zipar_core.models.llamagen.vq import VQConfig, VQModel
from ..zipar_core.models.movqgan import MoVQGANConfig, MoVQGANDecoder


def _fields(cfg) -> dict:
    """A config dataclass as JSON-friendly keyword arguments (tuples -> lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _wrap(cls, module: torch.nn.Module):
    """Wrap an existing module without building (and randomly initialising) a second copy of it; a quantized
    module's setting goes into the component's config (so ``save_pretrained`` records it)."""
    from ..zipar_core.quantization import quantization_of

    q = quantization_of(module)
    with torch.device("meta"):
        wrapper = cls(**_fields(module.config), **({"quantization": q.record()} if q is not None else {}))
    wrapper.model = module
    return wrapper


class LlamaGenGPTModel(ModelMixin, ConfigMixin):
    """The LlamaGen GPT (c2i or t2i) as a diffusers component; ``.model`` is the ``LlamaGenTransformer``."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, dim: int = 1024, n_layer: int = 24, n_head: int = 16, n_kv_head: int | None = None,
                 vocab_size: int = 16384, num_classes: int = 1000, class_dropout_prob: float = 0.1,
                 caption_dim: int = 2048, cls_token_num: int = 1, model_type: str = "c2i", multiple_of: int = 256,
                 ffn_dim_multiplier: float | None = None, ffn_hidden: int | None = None, norm_eps: float = 1e-5,
                 rope_base: float = 10000.0, block_size: int = 256, variant: str = "",
                 quantization: dict | None = None):
        """quantization: the ``zipar_core.quantization.Quantization`` record of a GPT saved quantized (its
        bitsandbytes layers are in the weights file; :meth:`from_pretrained` reads them as saved)."""
        super().__init__()
        self.model = LlamaGenTransformer(LlamaGenConfig(
            dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, vocab_size=vocab_size,
            num_classes=num_classes, class_dropout_prob=class_dropout_prob, caption_dim=caption_dim,
            cls_token_num=cls_token_num, model_type=model_type, multiple_of=multiple_of,
            ffn_dim_multiplier=ffn_dim_multiplier, ffn_hidden=ffn_hidden, norm_eps=norm_eps, rope_base=rope_base,
            block_size=block_size, variant=variant))

    def forward(self, *args, **kwargs):
        """The uncached full pass of ``LlamaGenTransformer.forward`` (checking / training)."""
        return self.model(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loading; a component saved quantized (``quantization`` in its config.json) is read as saved:
        its bitsandbytes layers from their packed weights and statistics, onto the CPU, nothing quantized again."""
        import json
        import os

        folder = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        path = os.path.join(folder, "config.json")
        config = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        if not config.get("quantization"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls._from_quantized(folder, config, kwargs.get("torch_dtype") or kwargs.get("dtype"))

    @classmethod
    def _from_quantized(cls, folder: str, config: dict, dtype):
        import inspect
        import os

        from safetensors.torch import load_file

        from ..zipar_core.models.llamagen.gpt import KEEP_UNQUANTIZED
        from ..zipar_core.quantization import Quantization, check_available, load_prequantized

        check_available(device="cpu")
        names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        with torch.device("meta"):
            wrapper = cls(**{k: v for k, v in config.items() if k in names})
        setting = Quantization.from_record(config["quantization"])
        files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
        sd = {k.removeprefix("model."): v for f in files for k, v in load_file(os.path.join(folder, f)).items()}
        dtype = dtype or sd["tok_embeddings.weight"].dtype
        load_prequantized(wrapper.model, sd, setting, KEEP_UNQUANTIZED + setting.skip, "cpu", dtype)
        wrapper.model.zipar_quantization = setting
        return wrapper.eval()


class LlamaGenVQModel(ModelMixin, ConfigMixin):
    """LlamaGen's VQ-16 tokenizer as a diffusers component; ``.model`` is the ``VQModel``."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, codebook_size: int = 16384, codebook_embed_dim: int = 8, codebook_l2_norm: bool = True,
                 codebook_show_usage: bool = True, commit_loss_beta: float = 0.25, z_channels: int = 256,
                 ch: int = 128, ch_mult: list[int] = (1, 1, 2, 2, 4), decoder_ch_mult: list[int] | None = None,
                 num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.model = VQModel(VQConfig(
            codebook_size=codebook_size, codebook_embed_dim=codebook_embed_dim, codebook_l2_norm=codebook_l2_norm,
            codebook_show_usage=codebook_show_usage, commit_loss_beta=commit_loss_beta, z_channels=z_channels,
            ch=ch, ch_mult=tuple(ch_mult), decoder_ch_mult=tuple(decoder_ch_mult) if decoder_ch_mult else None,
            num_res_blocks=num_res_blocks, dropout=dropout))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> images (B, 3, 16h, 16w), about [-1, 1]."""
        return self.model.decode_codes(codes)


class ChameleonVQGANModel(ModelMixin, ConfigMixin):
    """The decoder half of Chameleon's VQGAN (Lumina-mGPT's image decoder) as a diffusers component."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, n_embed: int = 8192, embed_dim: int = 256, z_channels: int = 256, resolution: int = 512,
                 out_ch: int = 3, ch: int = 128, ch_mult: list[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: list[int] = (), attn_type: str = "vanilla"):
        super().__init__()
        self.model = ChameleonVQGANDecoder(VQGANConfig(
            n_embed=n_embed, embed_dim=embed_dim, z_channels=z_channels, resolution=resolution, out_ch=out_ch,
            ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, attn_resolutions=list(attn_resolutions),
            attn_type=attn_type))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model(codes)


class MoVQGANModel(ModelMixin, ConfigMixin):
    """The decoder half of MoVQGAN (Lumina-mGPT 2.0's image decoder) as a diffusers component."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, n_embed: int = 16384, embed_dim: int = 4, z_channels: int = 4, ch: int = 256,
                 ch_mult: list[int] = (1, 2, 2, 4), num_res_blocks: int = 2, attn_levels: list[int] = (3,),
                 out_ch: int = 3):
        super().__init__()
        self.model = MoVQGANDecoder(MoVQGANConfig(
            n_embed=n_embed, embed_dim=embed_dim, z_channels=z_channels, ch=ch, ch_mult=list(ch_mult),
            num_res_blocks=num_res_blocks, attn_levels=list(attn_levels), out_ch=out_ch))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model(codes)


# The wrapper of each plain torch module a family uses as a pipeline component (transformers models and
# tokenizers are components as they are).
WRAPPERS = {LlamaGenTransformer: LlamaGenGPTModel, VQModel: LlamaGenVQModel,
            ChameleonVQGANDecoder: ChameleonVQGANModel, MoVQGANDecoder: MoVQGANModel}


def wrap(module):
    """An adapter's module -> the pipeline component that holds it (itself unless it is a plain module)."""
    cls = WRAPPERS.get(type(module))
    return _wrap(cls, module) if cls is not None else module


def unwrap(component):
    """A pipeline component -> the module an adapter computes with."""
    return component.model if isinstance(component, tuple(WRAPPERS.values())) else component

"""What the tests share: small test-only models and helpers. The tiny models of the real families come from
the package (``zipar.zipar_core.models.tiny``, the registry's builders); no test module imports another.

- ``ToyAR``: a tiny generic AR image model for sampler tests: class-conditional, optional EOL layout. It is
  deliberately not LlamaGen: 1-D learned positions by slot, so tests cover EOL layouts and models whose
  positions are raster slots. ``full_forward`` is the uncached reference: one causal pass over a whole
  token sequence, the computation every cached pass must reproduce. ``Recorder`` keeps every forward.
- ``tiny_gpt`` / ``tiny_vq``: LlamaGen parts with norms away from 1 (so a wrong norm cannot hide).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from zipar.zipar_core.cache import SlotKVCache
from zipar.zipar_core.layout import EOL, TokenLayout
from zipar.zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel
from zipar.zipar_core.models.tiny import tiny_llamagen_parts as tiny_llamagen  # noqa: F401  (GPT + 16-px VQ)
from zipar.zipar_core.models.tiny import word_tokenizer
from zipar.zipar_core.protocol import Conditioning


class ToyAR(nn.Module):
    def __init__(self, codebook=32, classes=5, dim=32, heads=4, layers=2, max_slots=128, seed=0,
                 dtype=torch.float32):
        super().__init__()
        torch.manual_seed(seed)
        self.codebook_size, self.classes, self.heads = codebook, classes, heads
        self.embed = nn.Embedding(codebook + 1, dim)  # last row: the EOL token
        self.cls = nn.Embedding(classes + 1, dim)  # last row: the null class
        self.pos = nn.Embedding(max_slots, dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.head = nn.Linear(dim, codebook)
        for p in self.parameters():  # larger weights: sharper, more position-dependent distributions
            p.data.mul_(3.0)
        self.to(dtype).eval()
        self.device, self.dtype = torch.device("cpu"), dtype

    def prepare(self, labels, rows, cols, eol=False, guidance=False) -> Conditioning:
        labels = torch.as_tensor(labels)
        rows_labels = torch.cat([labels, torch.full_like(labels, self.classes)]) if guidance else labels
        layout = TokenLayout(rows, cols, prefix=1, eol=eol)
        valid = torch.ones((len(rows_labels), 1), dtype=torch.bool)
        return Conditioning(layout, len(labels), guidance, valid, payload=rows_labels)

    def new_cache(self, cond, num_slots):
        d = self.embed.weight.shape[1]
        return SlotKVCache(len(self.qkv), cond.num_sequences, self.heads, num_slots, d // self.heads,
                           self.dtype, self.device)

    def _embed_tokens(self, tokens):
        return self.embed(torch.where(tokens == EOL, self.codebook_size, tokens))

    def _layers(self, h, visible, kv):
        """kv(layer, k, v) -> full k, v; visible (N, q, kv) bool."""
        N, q, d = h.shape
        for i, (qkv, out) in enumerate(zip(self.qkv, self.out)):
            x = F.layer_norm(h, (d,))
            a, k, v = qkv(x).view(N, q, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            k, v = kv(i, k, v)
            y = F.scaled_dot_product_attention(a, k, v, attn_mask=visible[:, None])
            h = h + out(y.transpose(1, 2).reshape(N, q, d))
        return self.head(F.layer_norm(h, (d,))).float()

    @torch.no_grad()
    def prefill(self, cond, cache, visible):
        h = self.cls(cond.payload)[:, None] + self.pos.weight[0]
        writes = cache.at(torch.zeros((cond.num_sequences, 1), dtype=torch.long), visible.shape[-1])
        return self._layers(h, visible, writes.write)[:, -1]

    @torch.no_grad()
    def forward(self, cond, tokens, slots, visible, cache):
        return self._layers(self._embed_tokens(tokens) + self.pos(slots), visible, cache.at(slots, visible.shape[-1]).write)

    @torch.no_grad()
    def full_forward(self, cond, tokens, slots):
        """Uncached reference: tokens/slots (N, n) image tokens in slot order after the class token;
        plain causal attention over [class, tokens]. Returns logits (N, 1 + n, V)."""
        h = torch.cat([self.cls(cond.payload)[:, None] + self.pos.weight[0],
                       self._embed_tokens(tokens) + self.pos(slots)], 1)
        n = h.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril().expand(h.shape[0], n, n)
        return self._layers(h, causal, lambda i, k, v: (k, v))

    def decode(self, codes):
        return (codes.float() / self.codebook_size * 2 - 1)[:, None].expand(-1, 3, -1, -1)


class Recorder:
    """Wraps a model and keeps every forward's tokens, slots and logits."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.codebook_size, self.device, self.dtype = model.codebook_size, model.device, model.dtype

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, cond, tokens, slots, visible, cache):
        logits = self.model.forward(cond, tokens, slots, visible, cache)
        self.calls.append((tokens.clone(), slots.clone(), logits.clone()))
        return logits


# -- LlamaGen parts -----------------------------------------------------------------------------------

T2I_PREFIX = 6  # tiny stand-in for the 120 caption tokens


def tiny_config(model_type="c2i", block_size=36, **kw) -> LlamaGenConfig:
    cfg = {"dim": 64, "n_layer": 2, "n_head": 4, "vocab_size": 96, "num_classes": 10, "caption_dim": 24, "multiple_of": 32,
               "model_type": model_type, "block_size": block_size, "cls_token_num": 1 if model_type == "c2i" else T2I_PREFIX}
    cfg.update(kw)
    return LlamaGenConfig(**cfg)


def tiny_gpt(model_type="c2i", seed=0, **kw) -> LlamaGenTransformer:
    torch.manual_seed(seed)
    model = LlamaGenTransformer(tiny_config(model_type, **kw))
    with torch.no_grad():  # norms away from 1 so a wrong norm cannot hide
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model.eval()


def tiny_vq(seed=0) -> VQModel:
    torch.manual_seed(seed)
    return VQModel(VQConfig(codebook_size=96, codebook_embed_dim=8, z_channels=16, ch=32, ch_mult=(1, 2),
                            num_res_blocks=1)).eval()


def caption_batch(b, p, dim, seed=1):
    g = torch.Generator().manual_seed(seed)
    caps = torch.randn(b, p, dim, generator=g)
    mask = torch.ones(b, p, dtype=torch.bool)
    mask[0, :2] = False  # left padding on the first caption
    if b > 1:
        mask[1, :4] = False
    return caps * mask[..., None], mask


def tiny_t5():
    from transformers import T5Config, T5EncoderModel

    specials = ["<pad>", "</s>", "<unk>"]
    words = ["a", "cat", "dog", "red", "blue", "on", "the", "mat", "photo", "of"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    torch.manual_seed(1)
    model = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4))
    tok = word_tokenizer(vocab, specials, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    return model.eval(), tok


# -- pipelines ----------------------------------------------------------------------------------------

def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_llamagen_pipeline_folder(folder) -> str:
    """A tiny class-conditional LlamaGen (10 classes, 4x4 tokens, 64x64 px) saved as a ZipAR pipeline folder."""
    from zipar import ZipARPipeline
    from zipar.zipar_core.models.llamagen import LlamaGenAdapter

    gpt, vq = tiny_llamagen("c2i")
    ZipARPipeline.from_adapter(LlamaGenAdapter(gpt, vq)).save_pretrained(folder)
    return str(folder)


# -- every family's tiny model, ready to decode (diffusers' get_dummy_components) ---------------------------------

def draft_friendly_llamagen(model_type):
    """Tiny random LlamaGen whose image-token embeddings are scaled by 0.1, so that a prediction depends only
    weakly on the token before it, as in trained image models (with stock random weights every greedy
    prediction flips with the previous token, and Jacobi drafts are exact but never accepted)."""
    from zipar.zipar_core.models.llamagen import LlamaGenAdapter

    gpt = tiny_gpt(model_type)
    with torch.no_grad():
        gpt.tok_embeddings.weight.mul_(0.1)
    return LlamaGenAdapter(gpt)


def _llamagen_c2i():
    ad = draft_friendly_llamagen("c2i")
    return ad, ad.prepare(class_labels=[1, 7], rows=6, cols=6, guidance_scale=2.0), 2.0


def _llamagen_t2i():
    ad = draft_friendly_llamagen("t2i")
    caps, mask = caption_batch(2, ad.prefix, ad.config.caption_dim)
    return ad, ad.encode_captions(caps, mask, rows=5, cols=6, guidance_scale=3.0), 3.0


def _family(name, scale, **request):
    from zipar.zipar_core.models import registry

    def build():
        ad = registry.build_tiny(name)
        return ad, ad.prepare(**request, guidance_scale=scale), scale
    return build


# name -> build() -> (adapter, conditioning of two images with guidance, guidance_scale): one entry per family
FAMILY_CASES = {
    "llamagen c2i": _llamagen_c2i,
    "llamagen t2i": _llamagen_t2i,
    "janus": _family("janus", 5.0, prompt=["a cat", "a red dog on the mat"]),
    "emu3": _family("emu3", 3.0, prompt=["a cat", "a red dog"], negative_prompt="lowres", height=32, width=40),
    "lumina": _family("lumina", 3.0, prompt=["a cat", "a red dog"], height=64, width=64),
    "lumina2": _family("lumina2", 4.0, prompt=["a cat", "a red dog"], height=64, width=64),
}

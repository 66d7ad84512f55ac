"""Where the model of ``zipar generate`` / ``zipar sample`` comes from, told at once and without torch.

``--model`` names the embedded demo model (``demo``), a local file or folder, or a hub id (``owner/name``).
A local path that does not exist fails here, before anything loads or goes to the hub. For LlamaGen (its
files, a folder of them, a LlamaGen pipeline folder, the demo model) :func:`probe` builds the adapter on
the meta device from the files' headers and configs in seconds, so a request is checked before the
weights load; the other families are checked right after loading, before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass

from ..zipar_core.errors import SettingError
from ..zipar_core.model_files import file_sha256, is_checkpoint, is_hub_id
from ..zipar_core.models.registry import DEMO, DEMO_FILES, builtin_path

HASH_LIMIT = 256 << 20  # files up to this size are identified by content (sha256), larger ones by size + mtime


@dataclass
class Source:
    kind: str  # "demo", "llamagen" (a GPT file), "folder" (a local folder), "hub" (a hub id)
    name: str  # as the user gave it (PNG metadata, messages)
    path: str  # absolute path, or the hub id
    vq: str | None = None  # absolute paths of what --vq / --t5 / --vqgan name
    t5: str | None = None
    vqgan: str | None = None
    cache_only: bool = False  # a hub id read from the local cache alone (the hub is not reachable)

    def record(self) -> dict:
        """How to name this model again (``--from-png``): the path and the files beside it."""
        if self.kind == DEMO:
            return {"source": DEMO, "vq": None, "t5": None, "vqgan": None}
        return {"source": self.path, "vq": self.vq, "t5": self.t5, "vqgan": self.vqgan}


def _local(path: str | None, what: str, flag: str, folder: bool | None = None) -> str | None:
    if path is None:
        return None
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise FileNotFoundError(f"{flag} {path}: no such {what} ({full})")
    if folder is True and not os.path.isdir(full):
        raise FileNotFoundError(f"{flag} {path}: not a folder")
    if folder is False and not os.path.isfile(full):
        raise FileNotFoundError(f"{flag} {path}: not a file")
    return full


def resolve_source(args) -> Source:
    """The model the arguments name; a local path that does not exist is an error here, at once."""
    name = args.model
    if getattr(args, "llamagen_gpt", None):
        if name and name != args.llamagen_gpt:
            raise ValueError("give the GPT checkpoint once: --model FILE (--llamagen-gpt is its old name)")
        name = args.llamagen_gpt
    if not name:
        raise ValueError("give --model: 'demo', a model folder, a LlamaGen GPT checkpoint file or a hub id (owner/name)")
    extra = {"vq": _local(args.vq, "file", "--vq", folder=False), "t5": _local(args.t5, "folder", "--t5", folder=True),
             "vqgan": _local(args.vqgan, "file or folder", "--vqgan")}
    demo = builtin_path(name)  # the built-in name wins over a folder called "demo" (that one is ./demo)
    if demo is not None:
        if os.path.exists(name):
            print(f"--model {DEMO}: the embedded demo model (for the {'folder' if os.path.isdir(name) else 'file'} "
                  f"named {DEMO} here, write ./{DEMO})", file=sys.stderr)
        gpt, vq = (os.path.join(demo, f) for f in DEMO_FILES)
        return Source(DEMO, DEMO, gpt, vq=vq)
    full = os.path.abspath(os.path.expanduser(name))
    if os.path.isfile(full):
        if not is_checkpoint(full):
            raise ValueError(f"--model {name}: a file must be a LlamaGen GPT checkpoint (.pt, .safetensors, ...)")
        if extra["vq"] is None:  # the one beside it, by content: part of the model, so part of its identity
            from ..zipar_core.models.llamagen.loading import find_vq_beside

            extra["vq"] = find_vq_beside(full)
        return Source("llamagen", name, full, **extra)
    if os.path.isdir(full):
        return Source("folder", name, full, **extra)
    if not is_hub_id(name):
        raise FileNotFoundError(f"--model {name}: no such file or folder ({full}); a hub id reads owner/name")
    from ..pipelines.hub import cached_revision, check_hub_id, hub_reachable, offline_mode

    check_hub_id(name)  # neither reachable nor cached: one line now, not a minute of retries later
    cache_only = bool(cached_revision(name)) and not offline_mode() and not hub_reachable()
    if cache_only:  # said to the loaders (local_files_only), not set in the process's environment
        print(f"the hub is not reachable: using the cached copy of {name}", file=sys.stderr)
    return Source("hub", name, name, cache_only=cache_only, **extra)


# -- identity of the model: its files ----------------------------------------------------------------

def _file_id(path: str) -> dict:
    st = os.stat(path)
    if st.st_size <= HASH_LIMIT:
        return {"size": st.st_size, "sha256": file_sha256(path)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _tree_ids(folder: str) -> dict:
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith("."):
                path = os.path.join(root, f)
                out[os.path.relpath(path, folder)] = _file_id(path)
    return out


def fingerprint(source: Source) -> dict:
    """The model's files as a set identity holds them: sha256 of files up to 256 MiB, size + modification time
    of larger ones (hashing gigabytes at every start would cost minutes); a hub id with its cached commit."""
    if source.kind == "hub":
        from ..pipelines.hub import cached_revision

        files = {"hub_id": source.path, "revision": cached_revision(source.path)}
    elif source.kind == "folder":
        files = {"folder": source.path, "files": _tree_ids(source.path)}
    elif source.kind == DEMO:  # wherever zipar is installed: the shipped weights, by content
        return {"demo": {"gpt": _file_id(source.path), "vq": _file_id(source.vq)}}
    else:
        files = {"gpt": {"path": source.path, **_file_id(source.path)}}
    for k in ("vq", "t5", "vqgan"):
        p = getattr(source, k)
        if p is not None:
            files[k] = {"path": p, **(_file_id(p) if os.path.isfile(p) else {"files": _tree_ids(p)})}
    return files


# -- the adapter before the weights: configuration only ---------------------------------------------

def model_options(args) -> dict:
    """Loader options the command line passes (LlamaGen image size / heads, the quantization); part of what makes
    the model (a sample set's identity, an image's metadata)."""
    quantize = getattr(args, "quantize", None)
    return {k: v for k, v in (("image_size", args.image_size), ("n_head", args.n_head),
                              ("quantize", None if quantize == "none" else quantize)) if v is not None}


def loader_options(args) -> dict:
    """The loaders' keywords for ``model_options`` (``--quantize`` is their ``quantization``)."""
    opts = model_options(args)
    if "quantize" in opts:
        opts["quantization"] = opts.pop("quantize")
    return opts


def explicit_dtype(args):
    import torch

    return None if args.dtype == "auto" else getattr(torch, args.dtype)


def probe(source: Source, args):
    """(adapter on the meta device, the pipeline config's saved settings) for a LlamaGen model, read from file
    headers and configs without the weights; (None, {}) for the other families (checked after loading)."""
    import torch

    from ..zipar_core.models.llamagen import load_llamagen

    dtype = explicit_dtype(args) or torch.float32
    opts = loader_options(args)
    if source.kind in (DEMO, "llamagen"):
        if source.vq is None:
            raise SettingError("vq_path", f"no VQ tokenizer for {source.path}: give it with {{name}} or put one VQ "
                                          "checkpoint (e.g. vq_ds16_c2i.pt) beside it")
        return load_llamagen(source.path, source.vq, source.t5, dtype=dtype, device="meta", **opts), {}
    if source.kind != "folder":
        return None, {}
    index = os.path.join(source.path, "model_index.json")
    if os.path.isfile(index):
        return _probe_pipeline_folder(source.path, index, args)
    if os.path.isfile(os.path.join(source.path, "config.json")):
        return None, {}  # a transformers model: checked once loaded
    from ..zipar_core.models.llamagen.loading import find_llamagen_files

    gpt, vq, t5 = find_llamagen_files(source.path)
    vq = source.vq or vq
    if vq is None:
        raise SettingError("vq_path", f"{source.path} holds no VQ tokenizer checkpoint: give it with {{name}}")
    return load_llamagen(gpt, vq, source.t5 or t5, dtype=dtype, device="meta", **opts), {}


def _probe_pipeline_folder(folder: str, index_path: str, args):
    """A saved LlamaGen pipeline: its GPT and VQ built on the meta device from their config.json files."""
    import dataclasses

    import torch

    from ..pipelines.settings import SETTINGS
    from ..zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel
    from ..zipar_core.models.llamagen.adapter import _UnloadedT5

    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    if index.get("family") != "llamagen":
        return None, {}
    saved = {k: index[k] for k in SETTINGS if index.get(k) is not None}

    def config(sub: str, cls):
        with open(os.path.join(folder, sub, "config.json"), encoding="utf-8") as f:
            fields = json.load(f)
        names = {x.name for x in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in names})

    try:
        gpt_cfg = config("transformer", LlamaGenConfig)
        vq_cfg = config("vqvae", VQConfig) if isinstance(index.get("vqvae"), list) and index["vqvae"][0] else None
    except (OSError, ValueError, TypeError):
        return None, {}  # let the loader say what is wrong with the folder
    with torch.device("meta"):
        gpt = LlamaGenTransformer(gpt_cfg).to(explicit_dtype(args) or torch.float32)
        vq = VQModel(vq_cfg) if vq_cfg is not None else None
    from ..zipar_core.quantization import parse

    gpt.zipar_quantization = parse(loader_options(args).get("quantization"))
    adapter = LlamaGenAdapter(gpt, vq)
    if isinstance(index.get("text_encoder"), list) and index["text_encoder"][0]:
        adapter.t5 = _UnloadedT5(os.path.join(folder, "text_encoder"))
    return adapter, saved


# -- loading ---------------------------------------------------------------------------------------------

def load_pipeline(source: Source, args, device: str):
    """The pipeline of ``source`` on ``device``, with its progress bar off."""
    import torch

    from ..pipelines import ZipARPipeline

    dtype = explicit_dtype(args)
    opts = loader_options(args)
    if source.kind in (DEMO, "llamagen"):
        pipe = ZipARPipeline.from_llamagen_checkpoints(source.path, source.vq, source.t5, dtype=dtype or torch.float32,
                                                       device=device, **opts)
    else:
        kw = {"dtype": dtype} if dtype is not None else {}
        if source.cache_only:
            kw["local_files_only"] = True
        if source.kind == "folder" and not os.path.isfile(os.path.join(source.path, "model_index.json")) \
                or source.kind == "hub":
            extra = {"vqgan": source.vqgan, "t5_path": source.t5, "vq_path": source.vq,
                     "vision_tokenizer": getattr(args, "vision_tokenizer", None), **opts}
            kw.update(device=device, **{k: v for k, v in extra.items() if v is not None})
        pipe = ZipARPipeline.from_pretrained(source.path, **kw)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_facts(adapter) -> dict:
    """What makes the model compute what it computes, beyond its files: its architecture (a LlamaGen config is
    recorded whole, so a changed --n-head is named; other families by a digest of their config) and dtype."""
    import dataclasses

    modules, _ = adapter.components()
    cfg = getattr(modules["transformer"], "config", None)
    if cfg is not None and not hasattr(cfg, "to_dict") and dataclasses.is_dataclass(cfg):  # zipar's own configs
        arch = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    elif cfg is not None and hasattr(cfg, "to_dict"):  # transformers: large and nested, recorded by digest
        d = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_") and k not in
             ("dtype", "torch_dtype", "transformers_version", "name_or_path")}
        arch = {"config_sha256": hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()}
    else:
        arch = {}
    return {"architecture": arch, "dtype": str(adapter.dtype).replace("torch.", "")}

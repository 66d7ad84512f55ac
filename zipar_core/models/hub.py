"""Model folders from a path or a Hugging Face hub id, without torch: ``config.json`` (to detect the family
and the layout before anything heavy is imported) and, for the layouts transformers cannot read from the
hub itself (the original publishers'), a local snapshot of the repository's files.

Offline (``HF_HUB_OFFLINE=1``) both answer from the hub cache or say what to download.
"""
from __future__ import annotations

import json
import os

from ..loading import HubOptions

# the files a model folder of any family's layout needs (no remote code, no images, no READMEs)
PATTERNS = ("*.json", "*.txt", "*.tiktoken", "*.model", "*.yaml", "*.safetensors", "*.bin", "*.ckpt")


def is_hub_id(text: str) -> bool:
    return not os.path.exists(text) and not os.path.isabs(text) and not text.startswith(".") and text.count("/") == 1


def _unreachable(repo_id: str, e: BaseException) -> FileNotFoundError:
    return FileNotFoundError(
        f"could not get {repo_id} from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
        f"Download the folder once (huggingface-cli download {repo_id} --local-dir <folder>) and give the folder's "
        "path instead, or check the id and your network / HF_HUB_OFFLINE setting")


def read_config(path_or_id: str, hub: HubOptions | None = None) -> dict:
    """``config.json`` of a local folder or a hub repository, as a dict."""
    if os.path.isdir(path_or_id):
        path = os.path.join(path_or_id, "config.json")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(path_or_id, "config.json", **(hub or HubOptions()).download())
        except Exception as e:  # noqa: BLE001 -- offline, unknown repo, gated repo: one explanation
            raise _unreachable(path_or_id, e) from e
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def snapshot(repo_id: str, hub: HubOptions | None = None) -> str:
    """A local folder with a hub repository's model files (safetensors instead of pickles when it has both)."""
    from huggingface_hub import list_repo_files, snapshot_download

    hub = hub or HubOptions()
    patterns = list(PATTERNS)
    try:
        if not hub.local_files_only and any(f.endswith(".safetensors") for f in list_repo_files(
                repo_id, revision=hub.revision, token=hub.token)):
            patterns.remove("*.bin")
    except Exception:  # noqa: BLE001 -- offline: take what the cache holds
        pass
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, **hub.download())
    except Exception as e:  # noqa: BLE001
        raise _unreachable(repo_id, e) from e

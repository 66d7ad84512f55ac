"""Loading from the Hugging Face hub without minutes of retries or a traceback when it cannot be reached.

Torch-free and diffusers-free to import (the command line checks a hub id here before anything loads).
:func:`hub_reachable` is a direct TCP connect to the hub's host (skipped behind a proxy or in offline
mode, where the hub libraries decide); :func:`cached_revision` finds a model in the local cache;
:func:`hub_errors` turns the hub libraries' errors into one line that says what to do.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from urllib.parse import urlparse

_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


class HubUnreachable(FileNotFoundError):
    """A hub id whose files could not be fetched (offline, or no such repository) and are not in the cache."""


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).upper() in ("1", "ON", "YES",
                                                                                                   "TRUE")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub's host accepts a connection; True (not probed) in offline mode or behind a proxy."""
    if offline_mode() or any(os.environ.get(k) for k in _PROXIES):
        return True
    url = urlparse(endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def cache_dir() -> str:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")


def cached_revision(repo_id: str) -> str | None:
    """The commit of a hub model in the local cache (its refs/main), or None when it is not cached."""
    ref = os.path.join(cache_dir(), "models--" + repo_id.replace("/", "--"), "refs", "main")
    try:
        with open(ref, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def message(repo_id: str, why: str) -> str:
    return (f"could not reach the Hugging Face hub for {repo_id!r} ({why}), and it is not in the local cache: "
            f"download it where the hub is reachable (hf download {repo_id} --local-dir FOLDER) and give that "
            "local folder instead of the hub id")


def check_hub_id(repo_id: str) -> None:
    """Fail at once, in one line, when a hub id can be neither fetched nor found in the cache."""
    if cached_revision(repo_id) is not None:
        return
    if offline_mode():
        raise HubUnreachable(message(repo_id, "HF_HUB_OFFLINE is set"))
    if not hub_reachable():
        raise HubUnreachable(message(repo_id, f"no connection to {endpoint()}"))


@contextmanager
def hub_errors(repo_id: str):
    """The hub libraries' errors for a missing network, offline mode or an unknown repository, in one line."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        yield
    except HubUnreachable:
        raise
    except RepositoryNotFoundError:
        raise HubUnreachable(f"no repository {repo_id!r} on the Hugging Face hub (or it is private: log in with hf "
                             "auth login)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError) as e:
        raise HubUnreachable(message(repo_id, type(e).__name__)) from None
    except OSError as e:  # transformers / diffusers word a failed download as an OSError
        text = str(e).lower()
        if any(w in text for w in ("offline", "connect", "cannot find the requested files", "local cache",
                                   "couldn't reach", "network")):
            raise HubUnreachable(message(repo_id, "offline")) from None
        raise

"""Claim files: processes sampling into one folder share the work instead of each making every image.

Before making an image a process writes its claim to a temporary file and links it to ``.claims/NNNNNN``
(``link`` fails when the name exists: atomic on local and NFS v3+ file systems, and a claim is never seen
half-written); a process that finds the file skips that image. A claim holds the claimer's
host, pid and process start time; it is removed when the image is written, and by the claimer on any way
out (Ctrl-C, an error). A claim left by a process that died is taken over: on the same host when that
process no longer runs, from another host when the claim was not refreshed (the claimer touches its claims
while it decodes) for ``stale_after`` seconds. Taking over renames the stale file first, which only one
process can do, so two processes never both take it.
"""
from __future__ import annotations

import json
import os
import socket
import time

CLAIMS = ".claims"


def _start_time(pid: int) -> str | None:
    """The start time of a process (Linux /proc; None elsewhere), so a reused pid is not taken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _start_time(pid) in (None, start)


class Claims:
    def __init__(self, folder: str, stale_after: float = 900.0):
        self.dir = os.path.join(folder, CLAIMS)
        os.makedirs(self.dir, exist_ok=True)
        self.stale_after = stale_after
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid())}
        self.held: set[int] = set()
        self._touched = time.time()

    def _path(self, index: int) -> str:
        return os.path.join(self.dir, f"{index:06d}")

    def take(self, index: int) -> bool:
        """Claim image ``index``; False when another live process holds it. The claim is written whole to a
        temporary file first and linked into place (``link`` fails if the claim exists: as exclusive as O_EXCL),
        so a process killed at any moment leaves no empty claim that looks alive."""
        path = self._path(index)
        tmp = os.path.join(self.dir, f".{index:06d}.{self.me['host']}.{self.me['pid']}.claim.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({**self.me, "time": time.time()}, f)
            for _ in range(2):
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if not self._take_over(path):
                        return False
                    continue
                self.held.add(index)
                return True
            return False
        finally:  # on a full disk too: no claim and no temporary file left behind
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _take_over(self, path: str) -> bool:
        """Remove a stale claim (its owner died); True if it was stale and is gone."""
        try:
            with open(path, encoding="utf-8") as f:
                owner = json.load(f)
            age = time.time() - os.stat(path).st_mtime
        except (OSError, ValueError):
            try:  # a claim being written right now, or already gone: stale only if old
                age = time.time() - os.stat(path).st_mtime
            except OSError:
                return True
            if age < 60:
                return False
            owner = {}
        if owner.get("host") == self.me["host"] and owner.get("pid") is not None:
            stale = not process_alive(int(owner["pid"]), owner.get("start"))
        else:
            stale = age > self.stale_after
        if not stale:
            return False
        grave = f"{path}.stale.{os.getpid()}"
        try:
            os.rename(path, grave)  # only one process wins this rename
        except OSError:
            return False
        os.unlink(grave)
        return True

    def take_all(self, indices) -> bool:
        """Claim every index or none (a batch whose images must be made together)."""
        got = []
        for i in indices:
            if not self.take(i):
                self.release(got)
                return False
            got.append(i)
        return True

    def release(self, indices) -> None:
        for i in list(indices):
            if i in self.held:
                self.held.discard(i)
                try:
                    os.unlink(self._path(i))
                except FileNotFoundError:
                    pass

    def release_all(self) -> None:
        self.release(list(self.held))

    def heartbeat(self, every: float = 30.0) -> None:
        """Refresh the held claims' modification time (at most every ``every`` seconds)."""
        now = time.time()
        if now - self._touched < every:
            return
        self._touched = now
        for i in self.held:
            try:
                os.utime(self._path(i))
            except OSError:
                pass

    def claimed_by_others(self, indices) -> int:
        return sum(1 for i in indices if i not in self.held and os.path.exists(self._path(i)))

"""Path maps: the same shared folder seen under different names on different machines.

A cluster run plans on the client and works on the workers; a worker that mounts the
share elsewhere (the client's `Z:\\music` is a Linux worker's `/mnt/nas/music`) gets
every path through the map: `--path-map 'Z:\\music=/mnt/nas/music'`. Paths travel between
machines as strings, never as `Path` objects (a pickled `WindowsPath` cannot be rebuilt on
Linux), and a mapped path is written with the worker's separators.

Pure string work: no file system access, so it is the same on every OS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from restore.errors import UsageError

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")  # C:\ or a UNC share \\server\share


def _windows_style(path: str) -> bool:
    return bool(_DRIVE.match(path))


def _parts(path: str) -> list[str]:
    return [p for p in re.split(r"[\\/]+", path) if p]


def _same_prefix(prefix: str, path: str) -> str | None:
    """The rest of `path` after `prefix` (as a list of parts joined by "/"), or None when
    `path` is not under `prefix`. Windows-style paths compare case-insensitively."""
    fold = str.casefold if _windows_style(prefix) else (lambda s: s)
    head, parts = _parts(prefix), _parts(path)
    if len(parts) < len(head) or [fold(p) for p in parts[:len(head)]] != [fold(p) for p in head]:
        return None
    if prefix.startswith(("/", "\\")) != path.startswith(("/", "\\")):
        return None
    return "/".join(parts[len(head):])


def _join(prefix: str, rest: str) -> str:
    if not rest:
        return prefix
    sep = "\\" if _windows_style(prefix) or ("\\" in prefix and "/" not in prefix) else "/"
    return prefix.rstrip("\\/") + sep + rest.replace("/", sep)


@dataclass(frozen=True)
class PathMap:
    """Ordered (client prefix, worker prefix) pairs; the longest matching prefix wins.
    An empty map is the identity: every machine sees the same paths."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: list[str] | tuple[str, ...]) -> "PathMap":
        """From `CLIENT=WORKER` strings (`--path-map`, repeatable). Raises UsageError."""
        pairs = []
        for spec in specs:
            client, sep, worker = spec.partition("=")
            client, worker = client.strip().strip("'\""), worker.strip().strip("'\"")
            if not sep or not client or not worker:
                raise UsageError(f"--path-map {spec!r}: expected CLIENT_PATH=WORKER_PATH, "
                                 r"e.g. 'Z:\music=/mnt/nas/music'")
            pairs.append((client, worker))
        return cls(tuple(pairs))

    def _map(self, path: str, inward: bool) -> str:
        best: tuple[int, str] | None = None
        for client, worker in self.pairs:
            src, dst = (client, worker) if inward else (worker, client)
            rest = _same_prefix(src, path)
            if rest is not None and (best is None or len(_parts(src)) > best[0]):
                best = (len(_parts(src)), _join(dst, rest))
        return best[1] if best else path

    def to_worker(self, path) -> str:
        """The worker's name for a client path (unchanged when no prefix matches)."""
        return self._map(str(path), inward=True)

    def to_client(self, path) -> str:
        """The client's name for a worker path (unchanged when no prefix matches)."""
        return self._map(str(path), inward=False)

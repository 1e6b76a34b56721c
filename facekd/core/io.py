"""Atomic file writes and hashing shared by every stage: nothing is ever half-written."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping
from .errors import FacekdError


class WriteError(FacekdError, OSError):
    """A file that could not be written (full disk, permissions); the message names it and what to do."""


def _write_error(target: Path, exc: OSError) -> WriteError:
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EACCES: "check the folder's permissions", errno.EROFS: "write to a writable folder"}
    advice = hint.get(exc.errno, "check the folder")
    return WriteError(exc.errno, f"cannot write {target}: {exc.strerror or exc}; {advice} (nothing was replaced)")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` only on success.

    An OSError while writing (a full disk, say) leaves ``path`` as it was and is raised as a
    :class:`WriteError` naming ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600; give the file the usual permissions
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except WriteError:
        raise
    except OSError as exc:
        raise _write_error(target, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes a killed process left under ``folder``.

    Call only from the one process that owns the folder, before it writes there."""
    removed = []
    root = Path(folder)
    if root.is_dir():
        for stale in root.rglob(".*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The user cache ``facekd fetch`` fills: FACEKD_CACHE, else $XDG_CACHE_HOME/facekd, else ~/.cache/facekd."""
    if env.get("FACEKD_CACHE"):
        return Path(env["FACEKD_CACHE"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "facekd"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".cache" / "facekd"

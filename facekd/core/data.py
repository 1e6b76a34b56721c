"""Aligned-face folders laid out as ``root/<identity>/<image>``."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from .errors import FacekdError, InputError


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
UNLABELLED = -1                 # label of a face without identity (data.unlabelled)
UNLABELLED_PREFIX = "@unlabelled"  # sample key prefix of unlabelled faces: "@unlabelled<k>/<path>"


class BadImageError(FacekdError, ValueError):
    """An image file that is missing or cannot be decoded; the message names the file."""


class DatasetError(FacekdError, ValueError):
    """A dataset folder or identity list that cannot be used; the message says what to do."""


def load_rgb_file(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file into a uint8 RGB array [H, W, 3]; raise BadImageError on failure."""
    path = Path(path)
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise BadImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
    if image is None:
        raise BadImageError(f"cannot decode image {path}: the file is empty or not a JPEG/PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_identity_list(path: str | os.PathLike) -> list[str]:
    """Identity names, one per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"identity list {path} does not exist: pass a text file with one identity per line")
    names: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in seen:
            raise DatasetError(f"identity {name!r} is listed twice in {path} (line {number}): remove the duplicate")
        seen.add(name)
        names.append(name)
    if not names:
        raise DatasetError(f"identity list {path} is empty")
    return names


class FaceFolder:
    """Images of ``root/<identity>/<image>``, labelled by the identity's position in ``classes``.

    ``identities`` (default: every sub-folder, sorted) fixes which identities are used and their
    label order. ``unlabelled`` folders add faces without identity (every image below them, any
    layout; ``$VARIABLE`` and ``~`` in their paths are expanded) with label ``UNLABELLED`` (-1), after
    the labelled ones. With ``skip_bad=True`` every
    image is decoded once up front and the unreadable ones are left out and listed in
    ``skipped``; otherwise loading one raises BadImageError.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        identities: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        skip_bad: bool = False,
        unlabelled: Sequence[str | os.PathLike] = (),
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist: pass a folder laid out as <identity>/<image>")
        available = sorted(entry.name for entry in self.root.iterdir() if entry.is_dir())
        if identities is None:
            identities = available
        else:
            missing = sorted(set(identities) - set(available))
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise DatasetError(f"{len(missing)} listed identities have no folder under {self.root}: {shown}")
        self.classes: list[str] = list(identities)
        suffixes = tuple(ext.lower() for ext in extensions)
        samples: list[tuple[str, int]] = []
        for label, identity in enumerate(self.classes):
            files = sorted(
                entry.name
                for entry in (self.root / identity).iterdir()
                if entry.is_file() and entry.suffix.lower() in suffixes
            )
            samples.extend((f"{identity}/{name}", label) for name in files)
        self.unlabelled_roots = [Path(os.path.expandvars(folder)).expanduser() for folder in unlabelled]
        for number, folder in enumerate(self.unlabelled_roots):
            if not folder.is_dir():
                unset = " (an environment variable in it is not set)" if "$" in str(folder) else ""
                raise DatasetError(f"unlabelled folder {folder} does not exist{unset}: pass folders of aligned "
                                   "faces, or train without them: --set data.unlabelled=[] --set data.unlabelled_per_batch=0")
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                           if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise DatasetError(f"unlabelled folder {folder} holds no images with extensions {suffixes}")
            samples.extend((f"{UNLABELLED_PREFIX}{number}/{name}", UNLABELLED) for name in files)
        self.skipped: list[str] = []
        if skip_bad:
            samples = self._drop_unreadable(samples)
        if not samples:
            raise DatasetError(f"no images with extensions {suffixes} under {self.root}")
        self.samples: list[tuple[str, int]] = samples
        self.labels: np.ndarray = np.asarray([label for _, label in samples], dtype=np.int64)

    def _drop_unreadable(self, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        kept = []
        for relative, label in samples:
            try:
                load_rgb_file(self._resolve(relative))
            except BadImageError:
                self.skipped.append(relative)
                continue
            kept.append((relative, label))
        if self.skipped:
            logger.warning("skipped %d unreadable images under %s, e.g. %s", len(self.skipped), self.root, self.skipped[0])
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, index: int) -> Path:
        return self._resolve(self.samples[index][0])

    def _resolve(self, relative: str) -> Path:
        if relative.startswith(UNLABELLED_PREFIX):
            number, rest = relative[len(UNLABELLED_PREFIX):].split("/", 1)
            return self.unlabelled_roots[int(number)] / rest
        return self.root / relative

    @property
    def labelled(self) -> np.ndarray:
        """Indices of the faces with an identity."""
        return np.flatnonzero(self.labels != UNLABELLED)

    def load_rgb(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 RGB [H, W, 3]."""
        return load_rgb_file(self.path(index))

    def file_list_digest(self) -> str:
        """sha256 of the sorted ``relative path\\tlabel`` lines: changes whenever the file list does."""
        digest = hashlib.sha256()
        for number, folder in enumerate(self.unlabelled_roots):
            digest.update(f"{UNLABELLED_PREFIX}{number}={folder.resolve()}\n".encode("utf-8"))
        for relative, label in sorted(self.samples):
            digest.update(f"{relative}\t{label}\n".encode("utf-8"))
        return digest.hexdigest()


def read_identity_set(spec: str, images_root: str | None = None) -> FaceFolder:
    """Faces of a set of identities: ``ROOT`` (every ``ROOT/<identity>/<image>``), or
    ``IDENTITIES.txt=ROOT`` (the listed identities only; ``images_root`` when ``=ROOT`` is left out)."""
    first, _, root = str(spec).partition("=")
    if first.endswith(".txt"):
        root = root or images_root
        if not root:
            raise InputError(f"identity list {first} needs its images: write {first}=IMAGES_ROOT")
        return FaceFolder(root, identities=read_identity_list(first))
    return FaceFolder(first)

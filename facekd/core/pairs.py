"""Verification pair lists: LFW ``pairs.txt`` files and insightface ``.bin`` sets."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .data import load_rgb_file
from .errors import FacekdError

DEFAULT_BIN_FOLDS = 10


class PairsError(FacekdError, ValueError):
    """A pair list that cannot be used; the message says what is wrong and where."""


@dataclass
class VerificationPairs:
    """Pairs of images, each pair marked same/different identity and assigned to a fold.

    ``images`` holds each image once, as a path or as an already-decoded uint8 RGB array;
    pair ``k`` compares ``images[left[k]]`` with ``images[right[k]]``.
    """

    images: list
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    name: str = "pairs"

    def __post_init__(self) -> None:
        self.left = np.asarray(self.left, dtype=np.int64)
        self.right = np.asarray(self.right, dtype=np.int64)
        self.same = np.asarray(self.same, dtype=bool)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        sizes = {len(self.left), len(self.right), len(self.same), len(self.folds)}
        if len(sizes) != 1:
            raise PairsError(f"{self.name}: left, right, same and folds must have one entry per pair")
        if len(self.left) and max(self.left.max(), self.right.max()) >= len(self.images):
            raise PairsError(f"{self.name}: a pair refers to an image index beyond the {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.same)

    def load_image(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 RGB [H, W, 3]."""
        image = self.images[index]
        return image if isinstance(image, np.ndarray) else load_rgb_file(image)

    def subset(self, pair_indices) -> "VerificationPairs":
        """The chosen pairs only, with ``images`` reduced to the images they use."""
        pair_indices = np.asarray(pair_indices, dtype=np.int64)
        used, inverse = np.unique(np.concatenate([self.left[pair_indices], self.right[pair_indices]]), return_inverse=True)
        count = len(pair_indices)
        return VerificationPairs(
            images=[self.images[i] for i in used],
            left=inverse[:count],
            right=inverse[count:],
            same=self.same[pair_indices],
            folds=self.folds[pair_indices],
            name=f"{self.name}[subset]",
        )


def read_lfw_pairs(pairs_txt: str | os.PathLike, images_root: str | os.PathLike, ext: str = ".jpg") -> VerificationPairs:
    """Read an LFW ``pairs.txt``: header ``folds N`` (or just ``N`` for one fold), then per fold
    N same-identity lines ``name i j`` and N different-identity lines ``name1 i name2 j``, with
    1-based image numbers resolving to ``images_root/name/name_%04d<ext>``."""
    pairs_txt, images_root = Path(pairs_txt), Path(images_root)
    if not pairs_txt.is_file():
        raise PairsError(f"pairs file {pairs_txt} does not exist")
    lines = [line.split() for line in pairs_txt.read_text(encoding="utf-8").splitlines()]
    header, body = lines[0], [(number, tokens) for number, tokens in enumerate(lines[1:], start=2) if tokens]
    try:
        num_folds, per_fold = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    except (ValueError, IndexError):
        raise PairsError(f"{pairs_txt}: first line must be '<folds> <pairs per class per fold>', got {' '.join(header)!r}") from None
    if len(body) != num_folds * 2 * per_fold:
        raise PairsError(f"{pairs_txt}: header promises {num_folds}×2×{per_fold} pairs but the file has {len(body)}")

    image_index: dict[Path, int] = {}
    first_seen_line: dict[Path, int] = {}

    def image(name: str, number: str, line: int) -> int:
        path = images_root / name / f"{name}_{int(number):04d}{ext}"
        if path not in image_index:
            image_index[path] = len(image_index)
            first_seen_line[path] = line
        return image_index[path]

    left, right, same, folds = [], [], [], []
    for position, (line, tokens) in enumerate(body):
        try:
            if len(tokens) == 3:
                a, b, is_same = image(tokens[0], tokens[1], line), image(tokens[0], tokens[2], line), True
            elif len(tokens) == 4:
                a, b, is_same = image(tokens[0], tokens[1], line), image(tokens[2], tokens[3], line), False
            else:
                raise ValueError
        except ValueError:
            raise PairsError(f"{pairs_txt}:{line}: expected 'name i j' or 'name1 i name2 j', got {' '.join(tokens)!r}") from None
        left.append(a)
        right.append(b)
        same.append(is_same)
        folds.append(position // (2 * per_fold))
    for path, line in first_seen_line.items():
        if not path.is_file():
            raise PairsError(f"{pairs_txt}:{line}: image {path} does not exist: check images_root and ext")
    return VerificationPairs(list(image_index), left, right, same, folds, name=pairs_txt.stem)


def _latin1_encode(text, encoding="latin1"):
    """What protocol-2 pickles from Python 3 call to rebuild ``bytes``; nothing else is allowed."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("refused: _codecs.encode is only allowed for latin1 text")
    return text.encode("latin1")


class _PlainDataUnpickler(pickle.Unpickler):
    """Admits only what pickle builds without importing: bytes, str, int, bool, None, lists, tuples."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain bytes, lists and bools are allowed")


def read_insightface_bin(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """Decode an insightface verification ``.bin`` (a pickle of ``(encoded images, issame)``).

    Returns the images as uint8 RGB arrays and ``same`` as a bool array; pair ``k`` is images
    ``2k`` and ``2k+1``. The pickle is read with an unpickler that refuses every class, so a
    crafted file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"verification set {path} does not exist")
    try:
        with open(path, "rb") as handle:
            content = _PlainDataUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # a malformed pickle raises many types; all mean "not a .bin set"
        raise PairsError(f"{path} is not a plain insightface .bin verification set: {exc}") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise PairsError(f"{path}: expected a pickled (images, issame) pair")
    encoded, issame = content
    if not all(isinstance(item, (bytes, bytearray)) for item in encoded):
        raise PairsError(f"{path}: images must be encoded image bytes")
    if not all(isinstance(flag, bool) for flag in issame):
        raise PairsError(f"{path}: issame must be a list of booleans")
    if len(encoded) != 2 * len(issame):
        raise PairsError(f"{path}: {len(encoded)} images for {len(issame)} pairs; expected two images per pair")
    images = []
    for index, data in enumerate(encoded):
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise PairsError(f"{path}: image {index} cannot be decoded")
        images.append(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
    return images, np.asarray(issame, dtype=bool)


def read_insightface_bin_pairs(path: str | os.PathLike, num_folds: int = DEFAULT_BIN_FOLDS) -> VerificationPairs:
    """An insightface ``.bin`` as VerificationPairs: consecutive images, ``num_folds`` equal chunks."""
    images, same = read_insightface_bin(path)
    count = len(same)
    return VerificationPairs(
        images=images,
        left=np.arange(count) * 2,
        right=np.arange(count) * 2 + 1,
        same=same,
        folds=np.arange(count) * num_folds // max(count, 1),
        name=Path(path).stem,
    )


def verification_set_name(spec: str) -> str:
    """The name of benchmark set ``spec`` (``agedb_30.bin``, ``PAIRS.txt=ROOT``): its file's stem."""
    return Path(str(spec).partition("=")[0]).stem


def read_verification_set(spec: str, images_root: str | os.PathLike | None = None) -> VerificationPairs:
    """One benchmark set: an insightface ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``), or
    an LFW-format pairs file as ``PAIRS.txt=IMAGES_ROOT`` (or ``PAIRS.txt`` with ``images_root``),
    named by :func:`verification_set_name`."""
    path, _, root = str(spec).partition("=")
    path = Path(path)
    if path.suffix == ".bin":
        pairs = read_insightface_bin_pairs(path)
    else:
        root = root or images_root
        if not root:
            raise PairsError(f"pairs file {path} needs its images: write {path}=IMAGES_ROOT or pass --images")
        pairs = read_lfw_pairs(path, root)
    pairs.name = verification_set_name(spec)
    return pairs

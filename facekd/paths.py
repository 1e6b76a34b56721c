"""Where the face data and the teacher come from.

Each resource is looked up in this order, and the first place that is *set* wins (a place that
is set but wrong is an error, never silently skipped):

1. explicit flags: ``--data`` (an aligned faces root, or a folder holding ``data/lfw``) and
   ``--teacher`` (an ONNX file);
2. environment variables: ``FACEKD_DATA`` and ``FACEKD_TEACHER`` (same meaning as the flags),
   then ``FACEKD_HOME`` (a folder laid out like the cache below);
3. the user cache filled by ``facekd fetch``: ``$FACEKD_CACHE``, else ``$XDG_CACHE_HOME/facekd``,
   else ``~/.cache/facekd``.

A home (``FACEKD_HOME`` or the cache) is laid out as::

    data/lfw/aligned_112/<identity>/<identity>_NNNN.jpg
    data/lfw/peopleDevTrain.txt
    data/lfw/splits/{train_identities,val_identities,val_pairs,val_pairs_3000}.txt
    models/sface/sface_fp32.onnx   (or sface_int8bq_original.onnx)
    models/yunet/yunet_2023mar_int8bq.onnx
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from facekd.training.recordio import is_recordio_root
from facekd.core.errors import FacekdError
from facekd.core.io import cache_dir

LFW_DIR = Path("data") / "lfw"
ALIGNED_DIR = LFW_DIR / "aligned_112"
PEOPLE_DEV_TRAIN = LFW_DIR / "peopleDevTrain.txt"
SPLITS_DIR = LFW_DIR / "splits"
PROFILE_PAIRS = "cfp/val/cfp_fp*.bin"  # under the data folder beside lfw/: CFP frontal-vs-profile pairs (optional)
SPLIT_FILES = ("train_identities.txt", "val_identities.txt", "val_pairs.txt", "val_pairs_3000.txt")
TEACHER_CANDIDATES = (Path("models/sface/sface_fp32.onnx"), Path("models/sface/sface_int8bq_original.onnx"))
SFACE_INT8BQ = TEACHER_CANDIDATES[1]
DETECTOR = Path("models/yunet/yunet_2023mar_int8bq.onnx")

FETCH_HINT = "run `facekd fetch`"


class ResourcesNotFound(FacekdError, ValueError):
    """Data or teacher cannot be found; the one-line message says which flag or variable to set."""


@dataclass(frozen=True)
class Resources:
    """Resolved inputs of a run.

    ``source`` names where they came from: ``flag``, ``env:FACEKD_DATA``, ``env:FACEKD_HOME``,
    ``cache``, ...; when data and teacher come from different places it reads
    ``data=<source>,teacher=<source>``. ``detector`` (YuNet, for aligning new photos) is taken
    from FACEKD_HOME, else the cache, else None.
    """

    aligned_root: Path
    train_identities: Path | None
    val_pairs: Path | None  # None: no splits/val_pairs.txt beside the faces (validation is optional)
    val_images_root: Path
    val_identities: Path | None  # splits/val_identities.txt: the identities the val pairs are drawn from
    teacher: Path
    detector: Path | None
    source: str

def is_aligned_root(path: Path) -> bool:
    """A folder with at least one ``<identity>/`` subfolder."""
    return path.is_dir() and any(child.is_dir() for child in path.iterdir())


@dataclass(frozen=True)
class _Data:
    aligned_root: Path
    train_identities: Path | None
    val_pairs: Path | None
    val_identities: Path | None = None


def _data_at(path: Path, origin: str) -> _Data:
    """Data from a home (``data/lfw`` inside), an LFW folder (``aligned_112`` inside) or an aligned root.

    Splits (optional) are read from the ``splits/`` folder beside the aligned root.
    """
    if is_recordio_root(path):  # insightface train.rec/train.idx: val pairs come from data.val_pairs
        return _Data(path, None, None)
    aligned = path
    for lfw in (path / LFW_DIR, path):
        if (lfw / ALIGNED_DIR.name).is_dir():
            aligned = lfw / ALIGNED_DIR.name
            break
    if not is_aligned_root(aligned):
        raise ResourcesNotFound(
            f"{origin}={path}: no aligned faces there; point it at a folder of <identity>/<image> crops "
            f"or at a folder holding {ALIGNED_DIR.as_posix()}, or {FETCH_HINT}"
        )
    splits = aligned.parent / SPLITS_DIR.name
    found = [splits / name for name in ("train_identities.txt", "val_pairs.txt", "val_identities.txt")]
    return _Data(aligned, *(path if path.is_file() else None for path in found))


def profile_pairs_beside(aligned_root: str | os.PathLike) -> Path | None:
    """CFP frontal-vs-profile pairs in the data folder beside ``<data>/lfw/aligned_112`` (optional), or None."""
    found = sorted(Path(aligned_root).parent.parent.glob(PROFILE_PAIRS))
    return found[0] if found else None


def home_problem(home: Path) -> str | None:
    """Why ``home`` is not a complete home (aligned faces, their val pairs, a teacher), or None
    when it is. The one definition of a valid data folder: the CLI resolves a home with the same
    checks, and the tests decide with it whether real faces are there."""
    try:
        data = _data_at(Path(home), "FACEKD_HOME")
        _home_teacher(Path(home), "FACEKD_HOME")
    except ResourcesNotFound as exc:
        return str(exc)
    if data.val_pairs is None:
        return f"FACEKD_HOME={home}: no {SPLITS_DIR.as_posix()}/val_pairs.txt beside the aligned faces; {FETCH_HINT}"
    return None


def _teacher_at(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise ResourcesNotFound(f"{origin}={path}: no such ONNX file; point it at the teacher .onnx or {FETCH_HINT}")
    return path


def _home_teacher(home: Path, origin: str) -> Path:
    for candidate in TEACHER_CANDIDATES:
        if (home / candidate).is_file():
            return home / candidate
    raise ResourcesNotFound(
        f"{origin}={home}: no teacher at {TEACHER_CANDIDATES[0].as_posix()} or {TEACHER_CANDIDATES[1].as_posix()}; "
        f"pass --teacher, set FACEKD_TEACHER or {FETCH_HINT}"
    )


def _home_detector(homes: list[Path]) -> Path | None:
    for home in homes:
        if (home / DETECTOR).is_file():
            return home / DETECTOR
    return None


def find_detector(env: Mapping[str, str] = os.environ) -> Path | None:
    """The YuNet detector of FACEKD_HOME, else of the fetch cache, else None."""
    homes = ([Path(env["FACEKD_HOME"]).expanduser()] if env.get("FACEKD_HOME") else []) + [cache_dir(env)]
    return _home_detector(homes)


def resolve_resources(
    data: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
    env: Mapping[str, str] = os.environ,
) -> Resources:
    """Find the aligned faces, val pairs, teacher and detector (see the module docstring for the order)."""
    home_var = env.get("FACEKD_HOME")
    cache = cache_dir(env)

    if data is not None:
        found, data_source = _data_at(Path(data).expanduser(), "--data"), "flag"
    elif env.get("FACEKD_DATA"):
        found, data_source = _data_at(Path(env["FACEKD_DATA"]).expanduser(), "FACEKD_DATA"), "env:FACEKD_DATA"
    elif home_var:
        found, data_source = _data_at(Path(home_var).expanduser(), "FACEKD_HOME"), "env:FACEKD_HOME"
    elif is_aligned_root(cache / ALIGNED_DIR):
        found, data_source = _data_at(cache, "FACEKD_CACHE"), "cache"
    else:
        raise ResourcesNotFound(
            f"no face data: pass --data, set FACEKD_DATA or FACEKD_HOME, or {FETCH_HINT} (it fills {cache})"
        )

    if teacher is not None:
        teacher_path, teacher_source = _teacher_at(Path(teacher).expanduser(), "--teacher"), "flag"
    elif env.get("FACEKD_TEACHER"):
        teacher_path = _teacher_at(Path(env["FACEKD_TEACHER"]).expanduser(), "FACEKD_TEACHER")
        teacher_source = "env:FACEKD_TEACHER"
    elif home_var:
        teacher_path, teacher_source = _home_teacher(Path(home_var).expanduser(), "FACEKD_HOME"), "env:FACEKD_HOME"
    elif any((cache / candidate).is_file() for candidate in TEACHER_CANDIDATES):
        teacher_path, teacher_source = _home_teacher(cache, "FACEKD_CACHE"), "cache"
    else:
        raise ResourcesNotFound(
            f"no teacher model: pass --teacher, set FACEKD_TEACHER or FACEKD_HOME, or {FETCH_HINT} (it fills {cache})"
        )

    homes = ([Path(home_var).expanduser()] if home_var else []) + [cache]
    source = data_source if data_source == teacher_source else f"data={data_source},teacher={teacher_source}"
    return Resources(
        aligned_root=found.aligned_root,
        train_identities=found.train_identities,
        val_pairs=found.val_pairs,
        val_images_root=found.aligned_root,
        val_identities=found.val_identities,
        teacher=teacher_path,
        detector=_home_detector(homes),
        source=source,
    )

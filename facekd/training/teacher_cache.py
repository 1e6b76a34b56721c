"""Teacher embeddings of a training folder, computed once and memory-mapped during training.

A plain cache folder holds ``embeddings.npy`` (and ``flipped.npy``, embeddings of the mirrored
images) as float32 [N, D] arrays, plus ``index.json``::

    {"key": {format, teacher, preprocess, dataset, with_flip, count, dim}, "done": int, "complete": bool}

The arrays are filled in place chunk by chunk; ``index.json`` is rewritten atomically after
each flushed chunk and is the only commit point: a cache counts as built only once its index
says ``complete: true`` with the expected key, and an interrupted build resumes at ``done``.

Under torchrun (``parallel=True``) the ranks share the work: rank 0 creates the arrays (or finds
what an interrupted build left), splits the chunks still to do into one contiguous run per rank
and broadcasts that plan; each rank embeds its run into the same memory-mapped arrays and records
the image ranges it has flushed in its own ``shard-<rank>.json`` (atomically, after each chunk);
after a barrier rank 0 checks that every image is covered and marks the index complete. A killed
rank resumes: the next parallel build skips every range a shard file records (a single-process
one resumes at the first gap). The chunk grid (multiples of the batch size) is the single-process
one, so the teacher sees the same batches and the arrays come out the same (byte for byte on CPU,
tested with 2 ranks).

A view cache (``views.npy`` [N, V, D]) holds the teacher's embeddings of V augmented views per
image (`training.views`); its key adds the augmentation spec and V.
"""
from __future__ import annotations

import bisect
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facekd.core.data import FaceFolder
from facekd.core.io import atomic_write_json, remove_stale_temp_files
from .teacher import Teacher, TeacherError
from .views import ViewSpec, make_view
from facekd.core.errors import FacekdError, InputError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
FLIPPED_FILE = "flipped.npy"
SHARD_PATTERN = "shard-*.json"   # a parallel build's progress, one file per rank


class StaleCacheError(FacekdError, ValueError):
    """The cache folder is missing, incomplete or was built for another teacher or dataset."""


def cache_key(teacher: Teacher, folder: FaceFolder, with_flip: bool) -> dict:
    """Everything the cached embeddings depend on."""
    return {
        "format": CACHE_FORMAT,
        "teacher": teacher.identity,
        "preprocess": teacher.preprocess.to_dict(),
        "dataset": folder.file_list_digest(),
        "with_flip": bool(with_flip),
        "count": len(folder),
        "dim": int(teacher.embedding_size),
    }


def _as_json(key: dict) -> dict:
    return json.loads(json.dumps(key))


def _read_index(cache_dir: Path) -> dict | None:
    try:
        index = json.loads((cache_dir / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and isinstance(index.get("key"), dict) else None


@dataclass
class TeacherCache:
    """Read-only memory-mapped teacher embeddings; row ``i`` belongs to image ``i`` of the folder."""

    cache_dir: Path
    key: dict
    embeddings: np.memmap
    flipped: np.memmap | None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expected_key: dict) -> "TeacherCache":
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        if index is None:
            raise StaleCacheError(f"no teacher cache in {cache_dir} yet: `facekd cache-teacher` or a training run builds it")
        expected = _as_json(expected_key)
        if index["key"] != expected:
            differing = sorted(name for name in expected.keys() | index["key"].keys() if index["key"].get(name) != expected.get(name))
            raise StaleCacheError(f"teacher cache in {cache_dir} is stale ({', '.join(differing)} changed): rebuild it")
        if not index.get("complete"):
            raise StaleCacheError(
                f"teacher cache in {cache_dir} is incomplete ({index.get('done', 0)}/{expected['count']}): "
                "run the build again to resume it"
            )
        shape = (expected["count"], expected["dim"])
        try:
            embeddings = np.load(cache_dir / EMBEDDINGS_FILE, mmap_mode="r")
            flipped = np.load(cache_dir / FLIPPED_FILE, mmap_mode="r") if expected["with_flip"] else None
        except (OSError, ValueError) as exc:
            raise StaleCacheError(f"teacher cache in {cache_dir} is damaged ({exc}): delete the folder and rebuild") from None
        for array in (embeddings, flipped):
            if array is not None and (array.shape != shape or array.dtype != np.float32):
                raise StaleCacheError(f"teacher cache in {cache_dir} holds {array.shape} {array.dtype}, expected {shape} float32: rebuild it")
        return cls(cache_dir, expected, embeddings, flipped)

    def __len__(self) -> int:
        return len(self.embeddings)

    def lookup(self, indices, flipped=None) -> np.ndarray:
        """Teacher embeddings of images ``indices``; where ``flipped`` is true, of the mirrored image."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = np.array(self.embeddings[indices])
        if flipped is not None and np.any(flipped):
            if self.flipped is None:
                raise StaleCacheError(f"teacher cache in {self.cache_dir} has no mirrored embeddings: rebuild it with teacher.with_flip=true")
            mask = np.asarray(flipped, dtype=bool)
            rows[mask] = self.flipped[indices[mask]]
        return rows


def build_teacher_cache(
    teacher: Teacher,
    folder: FaceFolder,
    cache_dir: str | os.PathLike,
    with_flip: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    parallel: bool = False,
) -> TeacherCache:
    """Embed every image of ``folder`` (and its mirror image) with ``teacher`` into ``cache_dir``.

    Returns the existing cache when it matches; resumes an interrupted build with the same key;
    starts over when the teacher, preprocess or file list changed. ``parallel``: every torchrun
    rank calls this (the default process group exists) and embeds its own share of the images.
    """
    key = _as_json(cache_key(teacher, folder, with_flip))
    names = [EMBEDDINGS_FILE, FLIPPED_FILE] if with_flip else [EMBEDDINGS_FILE]
    shape = (key["count"], key["dim"])

    def embed_chunk(start: int, end: int) -> list[np.ndarray]:
        images = np.stack([teacher.preprocess.resize_rgb(folder.load_rgb(i)) for i in range(start, end)])
        views = [images, images[:, :, ::-1]] if with_flip else [images]
        return [_checked(teacher, teacher.embed(view), (end - start, key["dim"]), lambda row: folder.path(start + row))
                for view in views]

    _fill_cache(Path(cache_dir), key, {name: shape for name in names}, embed_chunk, batch_size, progress,
                "teacher cache", stale_files=[FLIPPED_FILE] if not with_flip else [], parallel=parallel)
    return TeacherCache.open(cache_dir, key)


def _checked(teacher: Teacher, embeddings: np.ndarray, shape: tuple, path_of_row) -> np.ndarray:
    """The teacher's embeddings; TeacherError when wrong in shape or not finite (naming the image of the bad row)."""
    name = getattr(teacher, "name", type(teacher).__name__)
    if embeddings.shape != shape:
        raise TeacherError(f"teacher {name} returned {list(embeddings.shape)} for {shape[0]} images, expected dim "
                           f"{shape[1]}: its output size changed between images")
    if not np.all(np.isfinite(embeddings)):
        bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=tuple(range(1, embeddings.ndim))))[0])
        raise TeacherError(f"teacher {name} returned NaN/inf for {path_of_row(bad)}: the model is broken "
                           "for this input; check the teacher file and its preprocessing (teacher.preprocess)")
    return embeddings


def _fill_cache(cache_dir: Path, key: dict, arrays: dict[str, tuple], embed_chunk, batch_size: int,
                progress: bool, desc: str, stale_files: list[str] = (), parallel: bool = False) -> None:
    """Fill the memory-mapped ``arrays`` {file: shape} of ``cache_dir`` image chunk by image chunk.

    ``embed_chunk(start, end)`` returns one array per file for images ``start:end``. ``index.json``
    is rewritten atomically after each flushed chunk: an interrupted build resumes at ``done``
    (or further, where a parallel build's shard files record more); a complete cache with the
    same key is left as it is. ``parallel``: one torchrun rank's share (`_fill_cache_sharded`).
    """
    if parallel:
        _fill_cache_sharded(cache_dir, key, arrays, embed_chunk, batch_size, progress, desc, stale_files)
        return
    count = key["count"]
    remove_stale_temp_files(cache_dir)
    index = _read_index(cache_dir)
    if index is not None and index["key"] == key and index.get("complete"):
        return
    maps = _resume_arrays(cache_dir, index, key, arrays)
    if maps is None:
        maps = _start_over(cache_dir, index, key, arrays, desc, stale_files)
        done = 0
    else:
        done = _done_prefix(_done_ranges(cache_dir, index, key))
        logger.info("resuming %s in %s at %d/%d", desc, cache_dir, done, count)
    with tqdm(total=count, initial=done, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(done, count, batch_size):
            end = min(start + batch_size, count)
            _write_rows(maps, start, end, embed_chunk(start, end))
            atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": end, "complete": False})
            bar.update(end - start)
    del maps
    _mark_complete(cache_dir, key)


def _start_over(cache_dir: Path, index: dict | None, key: dict, arrays: dict[str, tuple], desc: str,
                stale_files) -> list[np.memmap]:
    """Fresh zeroed arrays and an index at ``done: 0``; the old index and shard files go first."""
    if index is not None:
        logger.info("%s in %s does not match this teacher/dataset: rebuilding", desc, cache_dir)
    (cache_dir / INDEX_FILE).unlink(missing_ok=True)
    for name in [*stale_files, *(p.name for p in cache_dir.glob(SHARD_PATTERN))]:
        (cache_dir / name).unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    maps = [np.lib.format.open_memmap(cache_dir / name, mode="w+", dtype=np.float32, shape=shape)
            for name, shape in arrays.items()]
    atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": 0, "complete": False})
    return maps


def _write_rows(maps: list[np.memmap], start: int, end: int, values: list[np.ndarray]) -> None:
    for array, rows in zip(maps, values):
        array[start:end] = rows
        array.flush()


def _mark_complete(cache_dir: Path, key: dict) -> None:
    """The commit point; then a parallel build's shard files are no longer needed."""
    atomic_write_json(cache_dir / INDEX_FILE, {"key": key, "done": key["count"], "complete": True})
    for path in cache_dir.glob(SHARD_PATTERN):
        path.unlink(missing_ok=True)


# -- the parallel build (torchrun) ------------------------------------------------------------------


def _merged(ranges) -> list[list[int]]:
    """Sorted, disjoint [start, end) ranges covering the same images as ``ranges``."""
    out: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in ranges if int(e) > int(s)):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def _shard_ranges(path: Path, key: dict) -> list[list[int]]:
    """The image ranges one shard file records for this key ([] when unreadable or of another key)."""
    try:
        shard = json.loads(path.read_text(encoding="utf-8"))
        return _merged(shard["done"]) if shard.get("key") == key else []
    except (OSError, ValueError, TypeError, KeyError):
        return []


def _done_ranges(cache_dir: Path, index: dict | None, key: dict) -> list[list[int]]:
    """Images already embedded: the index's ``done`` prefix and every shard file of this key."""
    ranges = [[0, index["done"]]] if index is not None and index["key"] == key and isinstance(index.get("done"), int) else []
    for path in cache_dir.glob(SHARD_PATTERN):
        ranges += _shard_ranges(path, key)
    return _merged(ranges)


def _done_prefix(ranges: list[list[int]]) -> int:
    return ranges[0][1] if ranges and ranges[0][0] == 0 else 0


def _covered(ranges: list[list[int]], start: int, end: int) -> bool:
    at = bisect.bisect_right([s for s, _ in ranges], start) - 1
    return at >= 0 and ranges[at][1] >= end


def _pending_chunks(cache_dir: Path, key: dict, arrays: dict[str, tuple], batch_size: int, desc: str,
                    stale_files) -> list[tuple[int, int]] | None:
    """Rank 0's plan: the chunks of the single-process grid still to embed (None: the cache is complete)."""
    remove_stale_temp_files(cache_dir)
    index = _read_index(cache_dir)
    if index is not None and index["key"] == key and index.get("complete"):
        return None
    maps = _resume_arrays(cache_dir, index, key, arrays)
    if maps is None:
        maps = _start_over(cache_dir, index, key, arrays, desc, stale_files)
    del maps
    done = _done_ranges(cache_dir, _read_index(cache_dir), key)
    count = key["count"]
    chunks = [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    pending = [chunk for chunk in chunks if not _covered(done, *chunk)]
    if len(pending) < len(chunks):
        logger.info("resuming %s in %s: %d of %d chunks left", desc, cache_dir, len(pending), len(chunks))
    return pending


def _fill_cache_sharded(cache_dir: Path, key: dict, arrays: dict[str, tuple], embed_chunk, batch_size: int,
                        progress: bool, desc: str, stale_files) -> None:
    """This rank's share of a parallel build (see the module docstring). Every rank calls it."""
    import torch.distributed as dist

    # its own gloo group: the default one may be nccl; a dead rank ends the job through torchrun,
    # so the long timeout only lets the barrier wait for the slowest shard
    group = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        plan = [_pending_chunks(cache_dir, key, arrays, batch_size, desc, stale_files) if rank == 0 else None]
        dist.broadcast_object_list(plan, src=0, group=group)
        pending = plan[0]
        if pending is None:
            return
        mine = pending[rank * len(pending) // world : (rank + 1) * len(pending) // world]
        shard_file = cache_dir / f"shard-{rank}.json"
        done = _shard_ranges(shard_file, key)  # what this rank's file held before: kept
        maps = [np.lib.format.open_memmap(cache_dir / name, mode="r+") for name in arrays]
        with tqdm(total=sum(end - start for start, end in mine), desc=f"{desc}, rank {rank} of {world}", unit="img",
                  disable=not (progress and rank == 0)) as bar:
            for start, end in mine:
                _write_rows(maps, start, end, embed_chunk(start, end))
                done = _merged([*done, [start, end]])
                atomic_write_json(shard_file, {"key": key, "done": done})
                bar.update(end - start)
        del maps
        dist.barrier(group=group)
        if rank == 0:
            done = _done_ranges(cache_dir, _read_index(cache_dir), key)
            if not _covered(done, 0, key["count"]):
                raise RuntimeError(f"{desc} in {cache_dir}: after every rank finished, images are missing "
                                   f"(done {done} of {key['count']}); the cache stays incomplete")
            _mark_complete(cache_dir, key)
        dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)


def _resume_arrays(cache_dir: Path, index: dict | None, key: dict, arrays: dict[str, tuple]) -> list[np.memmap] | None:
    """The half-filled arrays of an interrupted build with the same key, or None."""
    if index is None or index["key"] != key or index.get("complete") or not isinstance(index.get("done"), int):
        return None
    try:
        maps = [np.lib.format.open_memmap(cache_dir / name, mode="r+") for name in arrays]
    except (OSError, ValueError):
        return None
    if any(m.shape != tuple(shape) or m.dtype != np.float32 for m, shape in zip(maps, arrays.values())):
        return None
    return maps


# -- consistent views ------------------------------------------------------------------------------

VIEWS_FILE = "views.npy"


def view_cache_key(teacher: Teacher, folder: FaceFolder, spec: ViewSpec, views: int) -> dict:
    """The plain cache's key plus the augmentation spec and the number of views per image."""
    key = cache_key(teacher, folder, with_flip=False)
    key.pop("with_flip")
    return {**key, "kind": "views", "views": int(views), "view_spec": spec.to_dict()}


@dataclass
class ViewCache:
    """Teacher embeddings of ``views`` augmented views per image: ``embeddings[i, v]`` is the teacher's
    embedding of ``make_view(image i, spec, i, v)``."""

    cache_dir: Path
    key: dict
    spec: ViewSpec
    embeddings: np.memmap   # [N, V, D] float32

    @property
    def views(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expected_key: dict, spec: ViewSpec) -> "ViewCache":
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        expected = _as_json(expected_key)
        if index is None or index["key"] != expected or not index.get("complete"):
            state = "missing" if index is None else ("stale" if index["key"] != expected else "incomplete")
            raise StaleCacheError(f"teacher view cache in {cache_dir} is {state}: build it with "
                                  "`facekd cache-teacher --views V` (an interrupted build resumes)")
        shape = (expected["count"], expected["views"], expected["dim"])
        try:
            embeddings = np.load(cache_dir / VIEWS_FILE, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StaleCacheError(f"teacher view cache in {cache_dir} is damaged ({exc}): delete it and rebuild") from None
        if embeddings.shape != shape or embeddings.dtype != np.float32:
            raise StaleCacheError(f"teacher view cache in {cache_dir} holds {embeddings.shape}, expected {shape}: rebuild it")
        return cls(cache_dir, expected, spec, embeddings)


def build_view_cache(teacher: Teacher, folder: FaceFolder, cache_dir: str | os.PathLike, spec: ViewSpec,
                     views: int, batch_size: int = 64, progress: bool = True, parallel: bool = False) -> ViewCache:
    """Embed ``views`` views of every image (view 0 = the image itself) into ``cache_dir``; resumable;
    ``parallel`` as in :func:`build_teacher_cache`."""
    if views < 1:
        raise InputError(f"views must be at least 1, got {views}")
    key = _as_json(view_cache_key(teacher, folder, spec, views))
    dim = key["dim"]

    def embed_chunk(start: int, end: int) -> list[np.ndarray]:
        sources = [teacher.preprocess.resize_rgb(folder.load_rgb(i)) for i in range(start, end)]
        batch = np.stack([make_view(image, spec, start + k, v) for k, image in enumerate(sources) for v in range(views)])
        embeddings = _checked(teacher, teacher.embed(batch), (len(batch), dim), lambda row: folder.path(start + row // views))
        return [embeddings.reshape(end - start, views, dim)]

    per_chunk = max(1, batch_size // views)
    _fill_cache(Path(cache_dir), key, {VIEWS_FILE: (key["count"], views, dim)}, embed_chunk, per_chunk, progress,
                f"teacher views ×{views}", parallel=parallel)
    return ViewCache.open(cache_dir, key, spec)

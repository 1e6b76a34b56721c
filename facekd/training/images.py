"""The trainer's decoded faces: all of them in RAM, or streamed batch by batch (`data.preload`).

Either source hands the trainer uint8 RGB faces [B,S,S,3] (S = the student's input size) for a list
of dataset indices, decoded by the same function (`decode_face`), so training on either reaches the
same weights.

- `PreloadedImages`: every face decoded once into one tensor [N,S,S,3]: N·S²·3 bytes on every rank
  (LFW's 7,907 faces: 0.3 GB; MS1MV3's 5.1 M: ≈ 190 GB).
- `StreamedImages`: only the batches this rank trains on, decoded a few batches ahead by a torch
  DataLoader whose workers are processes (`data.loader_workers`; 0 = decode in the training
  process). Each worker opens its own file handles (`RecordIOReader` reopens per process), and
  decoding competes with the training loop for no lock. Memory: the batches in flight,
  ``2 × workers`` of them.

`data.preload: auto` preloads when the decoded set is at most `PRELOAD_BUDGET_BYTES` (2 GiB),
else streams. The trainer applies the same rule (`fits_in_memory`) to the teacher embeddings: a RAM
copy when true, or on auto when they fit the budget; else rows read from the cache's memory maps.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from facekd.core.data import BadImageError, DatasetError
from facekd.core.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

PRELOAD_BUDGET_BYTES = 2 << 30   # data.preload=auto: preload a decoded set up to this size, else stream


class FaceSource(Protocol):
    """What a training set offers (`FaceFolder`, `RecordIOFaces`)."""

    def __len__(self) -> int: ...

    def load_rgb(self, index: int) -> np.ndarray: ...


def decode_face(faces: FaceSource, spec: PreprocessSpec, index: int) -> torch.Tensor:
    """Face ``index`` as uint8 RGB [S,S,3] at the spec's size."""
    return torch.from_numpy(np.ascontiguousarray(spec.resize_rgb(faces.load_rgb(index))))


def decoded_bytes(count: int, size: int) -> int:
    return count * size * size * 3


def fits_in_memory(setting: bool | str, nbytes: int) -> bool:
    """data.preload for something of ``nbytes``: true/false as given; auto = hold it in RAM when it
    fits the budget (the training faces; the trainer's teacher embeddings, `training.trainer`)."""
    if setting == "auto":
        return nbytes <= PRELOAD_BUDGET_BYTES
    return bool(setting)


def should_preload(setting: bool | str, count: int, size: int) -> bool:
    """data.preload: true/false as given; auto = preload when the decoded set fits the budget."""
    return fits_in_memory(setting, decoded_bytes(count, size))


class PreloadedImages:
    """Every face decoded once into one uint8 tensor [N,S,S,3]."""

    def __init__(self, faces: FaceSource, spec: PreprocessSpec, progress: bool = False):
        self.images = torch.empty((len(faces), spec.size, spec.size, 3), dtype=torch.uint8)
        for i in tqdm(range(len(faces)), desc="load images", unit="img", disable=not progress, leave=False):
            self.images[i] = decode_face(faces, spec, i)

    def gather(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    def batches(self, batches: Sequence[Sequence[int]]) -> Iterator[torch.Tensor]:
        return (self.gather(batch) for batch in batches)


class _Faces(Dataset):
    """Index -> decoded face; a user-caused decoding error comes back as the exception itself, so
    the training process raises it with its own one-line message (not a worker's traceback)."""

    def __init__(self, faces: FaceSource, spec: PreprocessSpec):
        self.faces, self.spec = faces, spec

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> torch.Tensor | Exception:
        try:
            return decode_face(self.faces, self.spec, index)
        except (BadImageError, DatasetError) as exc:
            return exc


def _stack(items: list) -> torch.Tensor | Exception:
    failed = [item for item in items if isinstance(item, Exception)]
    return failed[0] if failed else torch.stack(items)


class _BatchList(Sampler[list[int]]):
    """The loader's batch sampler: the index lists it is given, in order."""

    def __init__(self, batches: Iterable[Sequence[int]] = ()):
        self.batches = [list(map(int, batch)) for batch in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


class StreamedImages:
    """Decodes only the faces of the batches asked for, ``2 × workers`` batches ahead in worker
    processes (forked per epoch; the file handles they inherit are reopened in each)."""

    def __init__(self, faces: FaceSource, spec: PreprocessSpec, workers: int = 2):
        self.dataset = _Faces(faces, spec)
        self.workers = workers

    def gather(self, indices: Sequence[int]) -> torch.Tensor:
        return self._checked(_stack([self.dataset[int(i)] for i in indices]))

    def batches(self, batches: Sequence[Sequence[int]]) -> Iterator[torch.Tensor]:
        if not batches:
            return iter(())
        # No worker_init: torch sets one thread per worker itself, and cv2.setNumThreads in a forked
        # worker hangs once the parent has used OpenCV's thread pool (seen with OpenCV 4.14).
        # Its own generator: the loader's seed draw leaves torch's global RNG alone.
        loader = DataLoader(self.dataset, batch_sampler=_BatchList(batches), collate_fn=_stack,
                            num_workers=self.workers, generator=torch.Generator())
        return (self._checked(batch) for batch in loader)

    @staticmethod
    def _checked(batch: torch.Tensor | Exception) -> torch.Tensor:
        if isinstance(batch, Exception):
            raise batch
        return batch


def open_images(faces: FaceSource, spec: PreprocessSpec, preload: bool | str, workers: int,
                progress: bool = False) -> PreloadedImages | StreamedImages:
    """The image source `data.preload` asks for (auto: by the decoded size, see the module doc)."""
    size_gb = decoded_bytes(len(faces), spec.size) / 1e9
    if should_preload(preload, len(faces), spec.size):
        log.info("decoding %d training faces into memory (%.2f GB)", len(faces), size_gb)
        return PreloadedImages(faces, spec, progress)
    log.info("streaming %d training faces (%.1f GB decoded; data.preload=%s): %d decoding worker(s)",
             len(faces), size_gb, preload, workers)
    return StreamedImages(faces, spec, workers)

"""Online teacher: each batch's own augmented views embedded by the teacher, one batch ahead.

For when the teacher is cheap enough (a GPU, or a long CPU budget). A worker thread makes the
views of batch t+1 (`facekd.training.views.make_view` with a fresh view id per image and step) and runs
the teacher on them while the student trains on batch t; onnxruntime and torch release the GIL,
so the two overlap. With ``mixup`` a batch is, with that probability, blended with a permutation
of itself, x = λ·a + (1 − λ)·b with λ ~ U(0, 1) per batch (FunMatch); teacher and student see the
same mixed pixels, and mixed samples count as unlabelled (label terms skip them).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from facekd.core.data import UNLABELLED
from .teacher import Teacher
from .views import ViewSpec, make_view
from facekd.core.errors import InputError


class OnlineTeacher:
    """``prefetch(step, indices, faces)`` starts a batch; ``take(step, indices, faces)`` returns it
    (views, teacher, labels). ``faces`` are the batch's decoded images, uint8 [B,S,S,3]."""

    def __init__(self, teacher: Teacher, labels: torch.Tensor, spec: ViewSpec, mixup: float = 0.0, seed: int = 0):
        if not 0.0 <= mixup <= 1.0:
            raise InputError(f"teacher.mixup is a probability in [0, 1], got {mixup}")
        self.teacher, self.labels = teacher, labels
        self.spec, self.mixup, self.seed = spec, mixup, seed
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-teacher")
        self.pending: dict[int, Future] = {}

    def make_batch(self, step: int, indices: list[int],
                   faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 views [B,S,S,3], teacher embeddings [B,D], labels [B] of batch ``step`` (deterministic)."""
        rng = np.random.default_rng([self.seed, step])
        view_ids = rng.integers(1, 2**31 - 1, size=len(indices))
        views = np.stack([make_view(face.numpy(), self.spec, i, int(v))
                          for face, i, v in zip(faces, indices, view_ids)])
        labels = self.labels[torch.as_tensor(indices, dtype=torch.long)].clone()
        if self.mixup > 0 and rng.random() < self.mixup:
            lam = rng.random()
            partner = views[rng.permutation(len(views))]
            views = np.clip(np.rint(lam * views + (1.0 - lam) * partner), 0, 255).astype(np.uint8)
            labels[:] = UNLABELLED
        embeddings = self.teacher.embed(views)
        return torch.from_numpy(views), torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)), labels

    def prefetch(self, step: int, indices: list[int], faces: torch.Tensor) -> None:
        if step not in self.pending:
            self.pending[step] = self.pool.submit(self.make_batch, step, list(indices), faces)

    def take(self, step: int, indices: list[int],
             faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.prefetch(step, indices, faces)
        return self.pending.pop(step).result()

    def close(self) -> None:
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)

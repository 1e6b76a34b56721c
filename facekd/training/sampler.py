"""Batches of P identities × K images each, for losses that need several images per identity."""
from __future__ import annotations

import math
from collections import deque
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler
from facekd.core.errors import InputError


class IdentityBalancedSampler(Sampler[list[int]]):
    """Batch sampler: every batch holds ``identities_per_batch`` (P) distinct identities with
    ``images_per_identity`` (K) images each, grouped by identity.

    Each epoch every identity's images are shuffled and cut into groups of K; a short group (an
    identity with fewer than K images left, or a single image) is filled by drawing more of that
    identity's images with replacement. The groups are shuffled and dealt into batches of P
    distinct identities. An epoch has ``ceil(N / (P·K))`` batches in total over all ranks (rounded
    down to a multiple of ``world_size`` with ``drop_last``, up otherwise), so it covers about N
    images; rank ``r`` takes every ``world_size``-th batch starting at ``r``. The order depends only
    on ``seed`` and the epoch set with ``set_epoch``.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        identities_per_batch: int,
        images_per_identity: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        labels = np.asarray(labels)
        if identities_per_batch < 1 or images_per_identity < 1:
            raise InputError("identities_per_batch and images_per_identity must be at least 1")
        if not 0 <= rank < world_size:
            raise InputError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        identities, inverse = np.unique(labels, return_inverse=True)
        if len(identities) < identities_per_batch:
            raise InputError(
                f"a batch needs {identities_per_batch} distinct identities but the data has {len(identities)}: "
                "lower identities_per_batch"
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        self.images_of_identity: list[np.ndarray] = np.split(order, bounds)
        self.identities_per_batch = identities_per_batch
        self.images_per_identity = images_per_identity
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        total = math.ceil(len(labels) / (identities_per_batch * images_per_identity))
        rounded = total // world_size if drop_last else math.ceil(total / world_size)
        if rounded == 0:
            raise InputError(
                f"{len(labels)} images make {total} batches, fewer than world_size={world_size}: "
                "use smaller batches or drop_last=False"
            )
        self.batches_per_rank = rounded

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_rank

    def _identity_groups(self, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
        """One shuffled pass over the data as (identity, K image indices) groups."""
        k = self.images_per_identity
        groups = []
        for identity, images in enumerate(self.images_of_identity):
            shuffled = rng.permutation(images)
            for start in range(0, len(shuffled), k):
                group = shuffled[start : start + k]
                if len(group) < k:
                    group = np.concatenate([group, rng.choice(images, k - len(group), replace=True)])
                groups.append((identity, group))
        return [groups[i] for i in rng.permutation(len(groups))]

    def _all_batches(self) -> list[list[int]]:
        """The epoch's batches over all ranks, identical on every rank."""
        rng = np.random.default_rng((self.seed, self.epoch))
        wanted = self.batches_per_rank * self.world_size
        batches: list[list[int]] = []
        pending: deque[tuple[int, np.ndarray]] = deque()
        while len(batches) < wanted:
            pending.extend(self._identity_groups(rng))
            while len(batches) < wanted:
                taken: dict[int, np.ndarray] = {}
                deferred = []  # groups of an identity already in this batch wait for the next one
                while pending and len(taken) < self.identities_per_batch:
                    identity, group = pending.popleft()
                    if identity in taken:
                        deferred.append((identity, group))
                    else:
                        taken[identity] = group
                if len(taken) < self.identities_per_batch:
                    pending.extendleft(reversed(list(taken.items()) + deferred))
                    break  # too few distinct identities left: deal another pass
                pending.extendleft(reversed(deferred))
                batches.append([int(i) for group in taken.values() for i in group])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.rank :: self.world_size]

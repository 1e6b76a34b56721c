"""Face verification metrics: cosine pair scores, 10-fold accuracy, ROC AUC and TAR@FAR."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from .pairs import VerificationPairs

FARS = (1e-1, 1e-2, 1e-3)


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm (zero rows stay zero), as float32."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def embed_pairs(
    embed_fn: Callable[[np.ndarray], np.ndarray],
    pairs: VerificationPairs,
    batch_size: int = 64,
    flip_test: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised embeddings [len(pairs.images), D] of every image of ``pairs``.

    ``embed_fn`` maps uint8 RGB [N, H, W, 3] to embeddings [N, D]. With ``flip_test`` an image's
    embedding is normalise(normalise(f(x)) + normalise(f(mirror(x)))).
    """
    outputs = []
    starts = range(0, len(pairs.images), batch_size)
    for start in tqdm(starts, desc=f"embedding {pairs.name}", unit="batch", disable=not progress):
        batch = [pairs.load_image(i) for i in range(start, min(start + batch_size, len(pairs.images)))]
        if len({image.shape for image in batch}) > 1:
            raise ValueError(f"{pairs.name}: images differ in size ({batch[0].shape} vs others): align them all to one size")
        images = np.stack(batch)
        embeddings = l2_normalise(embed_fn(images))
        if flip_test:
            embeddings = l2_normalise(embeddings + l2_normalise(embed_fn(np.ascontiguousarray(images[:, :, ::-1]))))
        outputs.append(embeddings)
    return np.concatenate(outputs)


def pair_scores(embeddings: np.ndarray, pairs: VerificationPairs) -> np.ndarray:
    """Cosine similarity of each pair."""
    normalised = l2_normalise(embeddings)
    return np.sum(normalised[pairs.left] * normalised[pairs.right], axis=1)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting ½ (Mann–Whitney U from average ranks)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one positive and one negative pair")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    average_rank = first_rank + (counts - 1) / 2.0
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Highest true-accept rate over thresholds t (accept when score > t) whose false-accept rate
    #{negatives > t} / #negatives is at most ``far``."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    negatives = np.sort(scores[~same])[::-1]
    positives = scores[same]
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError("TAR@FAR needs at least one positive and one negative pair")
    allowed = math.floor(far * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        return 1.0
    return float(np.mean(positives > negatives[allowed]))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of "same when score >= threshold".

    Thresholds are cut points between distinct sorted scores (or just outside them); when
    several cuts tie, the middle one of them is taken.
    """
    order = np.argsort(scores, kind="stable")
    ordered, labels = np.asarray(scores, dtype=np.float64)[order], np.asarray(same, dtype=bool)[order]
    count = len(ordered)
    # correct[i]: negatives below cut i plus positives at or above it
    negatives_below = np.concatenate([[0], np.cumsum(~labels)])
    positives_above = labels.sum() - np.concatenate([[0], np.cumsum(labels)])
    correct = negatives_below + positives_above
    valid = np.ones(count + 1, dtype=bool)
    valid[1:count] = ordered[1:] > ordered[:-1]
    candidates = np.flatnonzero(valid & (correct == correct[valid].max()))
    cut = int(candidates[len(candidates) // 2])
    if cut == 0:
        threshold = float(np.nextafter(ordered[0], -np.inf))
    elif cut == count:
        threshold = float(np.nextafter(ordered[-1], np.inf))
    else:
        threshold = float((ordered[cut - 1] + ordered[cut]) / 2.0)
    return threshold, float(correct[cut] / count)


@dataclass
class VerificationResult:
    accuracy: float  # mean over folds; each fold's threshold chosen on the other folds
    accuracy_std: float
    threshold: float  # best threshold on all pairs (to deploy)
    auc: float
    tar_at_far: dict[str, float]  # only FARs with at least 1/FAR negative pairs
    num_pairs: int
    fold_accuracies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_scores(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> VerificationResult:
    """k-fold verification accuracy (threshold picked on the other folds) plus AUC and TAR@FAR."""
    scores, same, folds = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool), np.asarray(folds)
    if not (len(scores) == len(same) == len(folds)):
        raise ValueError("scores, same and folds need one entry per pair")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError("cross-validated accuracy needs at least two folds")
    fold_accuracies = []
    for fold in fold_ids:
        held_out = folds == fold
        threshold, _ = best_threshold(scores[~held_out], same[~held_out])
        fold_accuracies.append(float(np.mean((scores[held_out] >= threshold) == same[held_out])))
    negatives = int((~same).sum())
    return VerificationResult(
        accuracy=float(np.mean(fold_accuracies)),
        accuracy_std=float(np.std(fold_accuracies)),
        threshold=best_threshold(scores, same)[0],
        auc=roc_auc(scores, same),
        tar_at_far={f"{far:.0e}": tar_at_far(scores, same, far) for far in FARS if negatives >= round(1 / far)},
        num_pairs=len(scores),
        fold_accuracies=fold_accuracies,
    )

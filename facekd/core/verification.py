"""Face verification metrics: cosine pair scores, 10-fold accuracy, ROC AUC and TAR@FAR."""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm import tqdm

from .operating_points import DEFAULT_IDENTIFY_FPIR, IdentificationPoint, OperatingPoint, OperatingPoints
from .pairs import VerificationPairs

if TYPE_CHECKING:
    from .data import FaceFolder
from .errors import FacekdError, InputError

EmbedFn = Callable[[np.ndarray], np.ndarray]  # uint8 RGB [N, H, W, 3] -> embeddings [N, D]
FARS = (1e-1, 1e-2, 1e-3)


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm (zero rows stay zero), as float32."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def embed_once(embed_fn: EmbedFn) -> EmbedFn:
    """``embed_fn`` that embeds each distinct image (by its pixels) once and answers repeats from memory:
    for one model measured on overlapping sets of faces."""
    seen: dict[bytes, np.ndarray] = {}

    def embed(images: np.ndarray) -> np.ndarray:
        keys = [hashlib.blake2b(repr(image.shape).encode() + image.tobytes(), digest_size=16).digest() for image in images]
        new = list({key: index for index, key in enumerate(keys) if key not in seen}.items())
        if new:
            seen.update(zip([key for key, _ in new], embed_fn(np.stack([images[index] for _, index in new]))))
        return np.stack([seen[key] for key in keys])

    return embed


def embed_images(
    embed_fn: Callable[[np.ndarray], np.ndarray],
    count: int,
    load_image: Callable[[int], np.ndarray],
    batch_size: int = 64,
    flip_test: bool = False,
    progress: bool = False,
    name: str = "faces",
) -> np.ndarray:
    """L2-normalised embeddings [count, D] of images ``load_image(0 .. count-1)``.

    ``embed_fn`` maps uint8 RGB [N, H, W, 3] to embeddings [N, D]. With ``flip_test`` an image's
    embedding is normalise(normalise(f(x)) + normalise(f(mirror(x)))).
    """
    outputs = []
    starts = range(0, count, batch_size)
    for start in tqdm(starts, desc=f"embedding {name}", unit="batch", disable=not progress):
        batch = [load_image(i) for i in range(start, min(start + batch_size, count))]
        if len({image.shape for image in batch}) > 1:
            raise InputError(f"{name}: images differ in size ({batch[0].shape} vs others): align them all to one size")
        images = np.stack(batch)
        embeddings = l2_normalise(embed_fn(images))
        if flip_test:
            embeddings = l2_normalise(embeddings + l2_normalise(embed_fn(np.ascontiguousarray(images[:, :, ::-1]))))
        outputs.append(embeddings)
    return np.concatenate(outputs)


def embed_pairs(
    embed_fn: Callable[[np.ndarray], np.ndarray],
    pairs: VerificationPairs,
    batch_size: int = 64,
    flip_test: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised embeddings [len(pairs.images), D] of every image of ``pairs`` (see :func:`embed_images`)."""
    return embed_images(embed_fn, len(pairs.images), pairs.load_image, batch_size, flip_test, progress, pairs.name)


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
        raise InputError("AUC needs at least one positive and one negative pair")
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
        raise InputError("TAR@FAR needs at least one positive and one negative pair")
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


def cross_validated_decisions(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Whether each pair is decided right at the threshold picked on the other folds (bool per pair): the
    k-fold protocol pair by pair, so two models can be compared on the same pairs (:func:`mcnemar`)."""
    scores, same, folds = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool), np.asarray(folds)
    if not (len(scores) == len(same) == len(folds)):
        raise InputError("scores, same and folds need one entry per pair")
    if len(np.unique(folds)) < 2:
        raise InputError("cross-validated accuracy needs at least two folds")
    correct = np.zeros(len(scores), dtype=bool)
    for fold in np.unique(folds):
        held_out = folds == fold
        threshold, _ = best_threshold(scores[~held_out], same[~held_out])
        correct[held_out] = (scores[held_out] >= threshold) == same[held_out]
    return correct


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two models' decisions on the same pairs: the pairs only one of them gets
    right, and the two-sided binomial p-value that both are equally accurate."""
    from scipy.stats import binomtest

    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p_value)}


def evaluate_scores(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> VerificationResult:
    """k-fold verification accuracy (threshold picked on the other folds) plus AUC and TAR@FAR."""
    correct = cross_validated_decisions(scores, same, folds)
    scores, same, folds = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool), np.asarray(folds)
    fold_accuracies = [float(np.mean(correct[folds == fold])) for fold in np.unique(folds)]
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


# ----- the measures users live by: all pairs of a set of identities ------------------------------
OPERATING_FARS = (1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7)
REPORTED_FARS = (1e-3, 1e-4, 1e-5)
MIN_IMPOSTORS = 10  # a FAR is reported only when this many impostor pairs score at or above its threshold
POINT_CONFIDENCE = 0.95  # operating points hold their FAR with this one-sided confidence (Clopper–Pearson)
CALIBRATION_GALLERIES = (10, 30, 100, 200, 300)  # people enrolled in the open-set galleries export calibrates
CALIBRATION_FPIRS = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
CALIBRATION_TRIALS = 200  # random galleries per size (the bench's measures draw theirs with another seed)
PAIR_CHUNK = 1024  # rows of the similarity matrix per step: 1024 × 10⁴ faces is 40 MB of float32


class IdentitySetError(FacekdError, ValueError):
    """A set of identities that cannot give the measure asked for; the message says why."""


@dataclass
class AllPairsScores:
    """Every genuine pair's cosine and what the impostor pairs need for FARs down to 1/impostors.

    ``top_impostors``: the highest impostor cosines (descending), enough for FAR ``OPERATING_FARS[0]``;
    ``impostors_at_or_above[i]``: impostor pairs scoring ``>= genuine[i]`` (for the EER).
    """

    genuine: np.ndarray  # ascending
    impostor_pairs: int
    top_impostors: np.ndarray
    impostors_at_or_above: np.ndarray


def genuine_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosines of every pair of faces of the same identity, ascending."""
    scores = []
    for label in np.unique(labels):
        group = embeddings[labels == label]
        upper = np.triu_indices(len(group), 1)
        scores.append((group @ group.T)[upper])
    return np.sort(np.concatenate(scores).astype(np.float64))


def all_pairs_scores(embeddings: np.ndarray, labels: np.ndarray, progress: bool = False) -> AllPairsScores:
    """Genuine and impostor statistics of all pairs of ``embeddings`` (one identity label each),
    computed in row chunks so that 10⁴ faces need tens of MB, not the full similarity matrix."""
    embeddings, labels = l2_normalise(embeddings), np.asarray(labels)
    genuine = genuine_scores(embeddings, labels)
    count = len(labels)
    impostor_pairs = count * (count - 1) // 2 - len(genuine)
    keep = min(math.floor(OPERATING_FARS[0] * impostor_pairs) + 1, impostor_pairs)
    top, below_counts = np.empty(0, np.float32), np.zeros(len(genuine) + 1, np.int64)
    for start in tqdm(range(0, count, PAIR_CHUNK), desc="all pairs", unit="chunk", disable=not progress):
        stop = min(start + PAIR_CHUNK, count)
        scores = embeddings[start:stop] @ embeddings[start:].T
        columns = np.arange(start, count)[None, :]
        impostor = (columns > np.arange(start, stop)[:, None]) & (labels[start:stop, None] != labels[None, start:])
        chunk = scores[impostor]
        below_counts += np.bincount(np.searchsorted(genuine, chunk, side="right"), minlength=len(genuine) + 1)
        top = np.concatenate([top, chunk])
        if len(top) > keep:
            top = np.partition(top, len(top) - keep)[len(top) - keep:]
    at_or_above = np.cumsum(below_counts[::-1])[::-1][1:]
    return AllPairsScores(genuine, impostor_pairs, np.sort(top)[::-1].astype(np.float64), at_or_above)


def allowed_impostors(far: float, impostor_pairs: int, confidence: float | None = None) -> int:
    """How many impostor pairs may score at or above a threshold for FAR ``far``: ⌊far · n⌋, or
    with ``confidence`` the largest count whose one-sided Clopper–Pearson upper bound on the FAR
    is still ``<= far`` (a threshold that holds its FAR on people not in the set, not only on them)."""
    allowed = math.floor(far * impostor_pairs + 1e-9)
    if confidence is None:
        return allowed
    from scipy.stats import beta

    counts = np.arange(allowed + 1)
    upper = beta.ppf(confidence, counts + 1, impostor_pairs - counts)
    within = np.flatnonzero(upper <= far)
    return int(within[-1]) if len(within) else -1


def far_threshold(scores: AllPairsScores, far: float, confidence: float | None = None) -> tuple[float, int] | None:
    """(threshold, impostors at or above it) keeping at most :func:`allowed_impostors` impostor
    pairs at or above the threshold, or None when fewer than MIN_IMPOSTORS would back it."""
    return threshold_above(scores.top_impostors, allowed_impostors(far, scores.impostor_pairs, confidence))


def threshold_above(top: np.ndarray, allowed: int) -> tuple[float, int] | None:
    """(threshold, scores at or above it) with at most ``allowed`` of the descending ``top`` scores at or
    above it, cut between two of them; None when fewer than MIN_IMPOSTORS would be above it, or every score."""
    if allowed < MIN_IMPOSTORS or allowed >= len(top):
        return None
    if top[allowed - 1] > top[allowed]:
        threshold = float((top[allowed - 1] + top[allowed]) / 2.0)
    else:  # a tie straddles the cut: step above it
        threshold = float(np.nextafter(top[allowed - 1], np.inf))
    above = int(np.sum(top >= threshold))
    return (threshold, above) if above >= MIN_IMPOSTORS else None


def genuine_accept_rate(scores: AllPairsScores, threshold: float) -> float:
    return float(1.0 - np.searchsorted(scores.genuine, threshold, side="left") / len(scores.genuine))


def equal_error_rate(scores: AllPairsScores) -> float:
    """The rate where false rejects (genuine below t) meet false accepts (impostors at or above t),
    over thresholds t at the genuine scores."""
    false_reject = np.arange(len(scores.genuine)) / len(scores.genuine)
    false_accept = scores.impostors_at_or_above / scores.impostor_pairs
    crossing = int(np.argmin(np.abs(false_accept - false_reject)))
    return float((false_accept[crossing] + false_reject[crossing]) / 2.0)


def operating_points(scores: AllPairsScores, source: str, identities: int, faces: int,
                     identification: Sequence[IdentificationPoint] = ()) -> OperatingPoints:
    """Thresholds at every FAR of OPERATING_FARS the impostor pairs support, each holding its FAR
    with POINT_CONFIDENCE (so fewer impostors sit above it than ⌊FAR · n⌋), beside ``identification``."""
    points = []
    for far in OPERATING_FARS:
        found = far_threshold(scores, far, POINT_CONFIDENCE)
        if found is not None:
            threshold, above = found
            points.append(OperatingPoint(far, threshold, above, genuine_accept_rate(scores, threshold)))
    if not points:
        raise IdentitySetError(f"{source}: {scores.impostor_pairs} impostor pairs support no FAR down to "
                               f"{OPERATING_FARS[0]:g} with {MIN_IMPOSTORS} impostors above it: add identities")
    return OperatingPoints(points, source, identities, faces, len(scores.genuine), scores.impostor_pairs, MIN_IMPOSTORS,
                           POINT_CONFIDENCE, list(identification))


def identification_points(embeddings: np.ndarray, labels: np.ndarray, seed: int = 1) -> list[IdentificationPoint]:
    """Open-set thresholds: for each gallery size of CALIBRATION_GALLERIES the set supports,
    CALIBRATION_TRIALS random galleries (:func:`gallery_split`); per FPIR of CALIBRATION_FPIRS the
    threshold whose pooled strangers matched hold that FPIR with POINT_CONFIDENCE (as the FAR points)."""
    points = []
    for size in CALIBRATION_GALLERIES:
        try:
            trials = open_set_trials(embeddings, labels, size, CALIBRATION_TRIALS, seed=seed)
        except IdentitySetError:  # too few identities for a gallery of this size (gallery_split says why)
            continue
        strangers = np.sort(np.concatenate([t.stranger_scores for t in trials]))[::-1]
        for fpir in CALIBRATION_FPIRS:
            found = threshold_above(strangers, allowed_impostors(fpir, len(strangers), POINT_CONFIDENCE))
            if found is not None:
                points.append(IdentificationPoint(size, fpir, found[0], found[1], len(strangers)))
    return points


def calibrate(embeddings: np.ndarray, labels: np.ndarray, source: str, progress: bool = False) -> OperatingPoints:
    """The operating points of a set of identities never trained on: thresholds at target FARs from
    all their pairs, and open-set gallery thresholds (:func:`identification_points`)."""
    labels = np.asarray(labels)
    check_identity_set(labels)
    return operating_points(all_pairs_scores(embeddings, labels, progress=progress), source, len(np.unique(labels)),
                            len(labels), identification_points(embeddings, labels))


def first_faces(labels: np.ndarray) -> np.ndarray:
    """Index of each identity's first face (in label order of appearance)."""
    _, first = np.unique(labels, return_index=True)
    return np.sort(first)


def best_gallery_match(probes: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the best gallery template, its cosine) per probe, in chunks of probes."""
    best, score = [], []
    for start in range(0, len(probes), PAIR_CHUNK):
        scores = probes[start:start + PAIR_CHUNK] @ gallery.T
        best.append(np.argmax(scores, axis=1))
        score.append(scores[np.arange(len(scores)), best[-1]])
    return np.concatenate(best), np.concatenate(score).astype(np.float64)


def rank1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Closed-set 1:N: gallery = each identity's first face, probes = every other face; the share
    of probes whose best gallery face is their own identity's."""
    embeddings, labels = l2_normalise(embeddings), np.asarray(labels)
    gallery = first_faces(labels)
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    if len(probes) == 0:
        raise IdentitySetError("rank-1 needs identities with at least two faces (one enrolled, one probe)")
    best, _ = best_gallery_match(embeddings[probes], embeddings[gallery])
    return float(np.mean(labels[gallery][best] == labels[probes]))


@dataclass
class OpenSetTrial:
    """One enrolled gallery: the best-match score of every mated and non-mated probe."""

    mated_scores: np.ndarray  # best cosine of probes of enrolled people
    mated_correct: np.ndarray  # their best match is their own identity
    stranger_scores: np.ndarray  # best cosine of faces of people not enrolled


def gallery_split(labels: np.ndarray, gallery_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(gallery, mated, strangers) face indices: ``gallery_size`` random identities with two or more
    faces enrolled with their first face; their other faces are mated probes, every face of
    everyone else a non-mated probe (a stranger)."""
    identities, counts = np.unique(labels, return_counts=True)
    eligible = identities[counts >= 2]
    if gallery_size < 1 or gallery_size > len(eligible) or gallery_size >= len(identities):
        raise IdentitySetError(f"a gallery of {gallery_size} needs that many identities with two or more faces "
                               f"({len(eligible)} here) and others left as strangers ({len(identities)} in all)")
    enrolled = np.isin(labels, rng.choice(eligible, gallery_size, replace=False))
    first = first_faces(labels)
    gallery = first[enrolled[first]]
    mated = np.flatnonzero(enrolled & ~np.isin(np.arange(len(labels)), gallery))
    return gallery, mated, np.flatnonzero(~enrolled)


def open_set_trials(embeddings: np.ndarray, labels: np.ndarray, gallery_size: int, trials: int,
                    seed: int = 0) -> list[OpenSetTrial]:
    """``trials`` random galleries (:func:`gallery_split`), each with the best-match score of every probe."""
    embeddings, labels = l2_normalise(embeddings), np.asarray(labels)
    rng = np.random.default_rng(seed)
    return [open_set_trial(embeddings, labels, *gallery_split(labels, gallery_size, rng)) for _ in range(trials)]


def open_set_trial(embeddings: np.ndarray, labels: np.ndarray, gallery: np.ndarray, mated: np.ndarray,
                   strangers: np.ndarray) -> OpenSetTrial:
    """Best-match scores of the mated and non-mated probes against one enrolled gallery (face
    indices into L2-normalised ``embeddings``)."""
    best, mated_scores = best_gallery_match(embeddings[mated], embeddings[gallery])
    _, stranger_scores = best_gallery_match(embeddings[strangers], embeddings[gallery])
    return OpenSetTrial(mated_scores, labels[gallery][best] == labels[mated], stranger_scores)


def open_set_at_threshold(trials: list[OpenSetTrial], threshold: float) -> dict:
    """FPIR (strangers matched to someone) and FNIR (enrolled people not found) at one threshold."""
    fpir = np.mean([np.mean(t.stranger_scores >= threshold) for t in trials])
    fnir = np.mean([np.mean(~(t.mated_correct & (t.mated_scores >= threshold))) for t in trials])
    return {"threshold": float(threshold), "fpir": float(fpir), "fnir": float(fnir)}


def open_set_at_fpir(trials: list[OpenSetTrial], fpir: float) -> dict | None:
    """FNIR at the threshold where at most ``fpir`` of the strangers of all trials (pooled) match,
    or None when fewer than MIN_IMPOSTORS strangers would be allowed above it."""
    strangers = np.sort(np.concatenate([t.stranger_scores for t in trials]))[::-1]
    allowed = math.floor(fpir * len(strangers) + 1e-9)
    if allowed < MIN_IMPOSTORS or allowed >= len(strangers):
        return None
    measured = open_set_at_threshold(trials, float(np.nextafter(strangers[allowed], np.inf)))
    return {**measured, "fpir": fpir}


@dataclass
class IdentityResult:
    """The measures of all pairs of a set of identities (see :func:`measure_identities`)."""

    identities: int
    faces: int
    genuine_pairs: int
    impostor_pairs: int
    tar_at_far: dict[str, float]  # FAR ("1e-04") -> TAR, only FARs the impostor pairs support
    unsupported: dict[str, str]  # FAR -> why it is not reported
    eer: float
    rank1: float
    open_set: dict  # {gallery_size, trials, fpir, fnir, threshold} at a stated FPIR, or {..., reason}
    policy: dict | None = None  # FPIR/FNIR at the threshold the operating-point rule picks for the gallery

    def to_dict(self) -> dict:
        return asdict(self)


def check_identity_set(labels: np.ndarray) -> None:
    labels = np.asarray(labels)
    identities, counts = np.unique(labels, return_counts=True)
    if len(identities) < 2:
        raise IdentitySetError(f"{len(identities)} identity: all-pairs measures need two or more (impostor pairs)")
    if counts.max() < 2:
        raise IdentitySetError("no identity has two faces: all-pairs measures need genuine pairs")


def tar_entries(scores: AllPairsScores) -> tuple[dict[str, float], dict[str, str]]:
    """TAR at each REPORTED_FARS the impostor pairs support, and why the others are left out."""
    tars, unsupported = {}, {}
    for far in REPORTED_FARS:
        found = far_threshold(scores, far)
        if found is None:
            unsupported[f"{far:.0e}"] = (f"needs {math.ceil(MIN_IMPOSTORS / far):,} impostor pairs for {MIN_IMPOSTORS} "
                                         f"above the threshold, have {scores.impostor_pairs:,}")
        else:
            tars[f"{far:.0e}"] = genuine_accept_rate(scores, found[0])
    return tars, unsupported


def measure_identities(embeddings: np.ndarray, labels: np.ndarray, gallery_size: int = 100,
                       fpir: float = DEFAULT_IDENTIFY_FPIR, trials: int = 10, points: OperatingPoints | None = None,
                       progress: bool = False) -> IdentityResult:
    """All genuine vs all impostor pairs (TAR at FAR 1e-3/1e-4/1e-5 where supported, EER), closed-set
    rank-1, open-set FNIR at ``fpir`` for a gallery of ``gallery_size`` people (mean of ``trials``
    random galleries) and, given ``points``, FPIR/FNIR at the threshold their identification rule picks."""
    labels = np.asarray(labels)
    check_identity_set(labels)
    scores = all_pairs_scores(embeddings, labels, progress=progress)
    tars, unsupported = tar_entries(scores)
    gallery = min(gallery_size, len(np.unique(labels)) - 1)
    runs = open_set_trials(embeddings, labels, gallery, trials)
    open_set = {"gallery_size": gallery, "trials": trials, "fpir": fpir}
    at_fpir = open_set_at_fpir(runs, fpir)
    open_set.update(at_fpir or {"reason": f"too few strangers for FPIR {fpir:g} ({MIN_IMPOSTORS} above it needed)"})
    policy = None
    if points is not None:
        threshold = points.identification_threshold(fpir, gallery)
        policy = {"gallery_size": gallery, "target_fpir": fpir, **open_set_at_threshold(runs, threshold)}
    return IdentityResult(len(np.unique(labels)), len(labels), len(scores.genuine), scores.impostor_pairs, tars,
                          unsupported, equal_error_rate(scores), rank1(embeddings, labels), open_set, policy)


# ----- an embedding function on pairs or on a folder of identities ------------------------------

def evaluate(embed_fn: EmbedFn, pairs: VerificationPairs, flip_test: bool = False,
             batch_size: int = 64, progress: bool = False) -> VerificationResult:
    embeddings = embed_pairs(embed_fn, pairs, batch_size=batch_size, flip_test=flip_test, progress=progress)
    return evaluate_scores(pair_scores(embeddings, pairs), pairs.same, pairs.folds)


def embed_folder(embed_fn: EmbedFn, folder: "FaceFolder", flip_test: bool = False, batch_size: int = 64,
                 progress: bool = False) -> np.ndarray:
    return embed_images(embed_fn, len(folder), folder.load_rgb, batch_size, flip_test, progress, folder.root.name)


def evaluate_identities(embed_fn: EmbedFn, folder: "FaceFolder", flip_test: bool = False, batch_size: int = 64,
                        progress: bool = False, **measures) -> IdentityResult:
    """All-pairs measures of ``folder``'s identities (:func:`measure_identities`)."""
    embeddings = embed_folder(embed_fn, folder, flip_test, batch_size, progress)
    return measure_identities(embeddings, folder.labels, progress=progress, **measures)

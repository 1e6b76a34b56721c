"""Verification metrics against naive references, and SFace on real LFW validation pairs."""
from __future__ import annotations

import numpy as np
import pytest

from facekd.core.pairs import VerificationPairs, read_lfw_pairs
from facekd.core.preprocess import SFACE
from facekd.training.teacher import OnnxTeacher
from facekd.core.verification import (
    best_threshold,
    cross_validated_decisions,
    mcnemar,
    embed_once,
    embed_pairs,
    evaluate_scores,
    pair_scores,
    roc_auc,
    tar_at_far,
)


def naive_auc(scores, labels) -> float:
    positives, negatives = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def naive_tar_at_far(scores, same, far) -> float:
    best = 0.0
    for threshold in np.concatenate([[-np.inf], scores]):
        accepted = scores > threshold
        if accepted[~same].mean() <= far:
            best = max(best, accepted[same].mean())
    return best


def noisy_scores(count: int, seed: int, rounding: int = 2):
    rng = np.random.default_rng(seed)
    same = rng.random(count) < 0.4
    scores = np.round(rng.normal(0.0, 0.3, count) + 0.5 * same, rounding)  # rounding makes ties
    return scores, same


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    scores, same = noisy_scores(300, seed, rounding=1)
    assert roc_auc(scores, same) == pytest.approx(naive_auc(scores, same), abs=1e-12)


def test_roc_auc_extremes():
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True])) == 1.0
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([True, False, False])) == 0.5
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))


@pytest.mark.parametrize("far", [0.3, 0.1, 0.05, 0.01])
def test_tar_at_far_matches_threshold_sweep(far):
    scores, same = noisy_scores(400, 5)
    assert tar_at_far(scores, same, far) == pytest.approx(naive_tar_at_far(scores, same, far), abs=1e-12)


def test_perfect_separation_scores_one():
    same = np.tile([True, False], 100)
    scores = np.where(same, 0.7, 0.1) + np.random.default_rng(0).uniform(-0.05, 0.05, 200)
    result = evaluate_scores(scores, same, np.arange(200) % 10)
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0 and result.auc == 1.0
    assert 0.15 < result.threshold < 0.65
    assert result.tar_at_far == {"1e-01": 1.0, "1e-02": 1.0}, "100 negatives are too few for FAR 1e-3"


def test_random_scores_give_chance_accuracy():
    rng = np.random.default_rng(0)
    scores, same = rng.uniform(-1, 1, 4000), rng.random(4000) < 0.5
    result = evaluate_scores(scores, same, np.arange(4000) % 10)
    assert abs(result.accuracy - 0.5) < 0.04
    assert abs(result.auc - 0.5) < 0.03
    assert result.num_pairs == 4000 and set(result.tar_at_far) == {"1e-01", "1e-02", "1e-03"}


def test_fold_thresholds_come_from_the_other_folds():
    # fold 0 separates at 0.45; fold 1 ties best at cuts 0.35 and 0.675 (the upper one is taken)
    scores = np.array([0.1, 0.3, 0.6, 0.9, 0.2, 0.5, 0.55, 0.8])
    same = np.array([False, False, True, True, False, True, False, True])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert best_threshold(scores[:4], same[:4]) == (pytest.approx(0.45), 1.0)
    assert best_threshold(scores[4:], same[4:]) == (pytest.approx(0.675), 0.75)
    result = evaluate_scores(scores, same, folds)
    # fold 0 judged at 0.675 misses 0.6; fold 1 judged at 0.45 accepts the negative 0.55
    assert result.fold_accuracies == [0.75, 0.75]
    assert result.accuracy == 0.75 and result.accuracy_std == 0.0
    assert result.threshold == pytest.approx(0.575)  # all pairs: best cuts 0.4 and 0.575
    assert set(result.to_dict()) == {"accuracy", "accuracy_std", "threshold", "auc", "tar_at_far", "num_pairs", "fold_accuracies"}


def test_best_threshold_at_the_ends():
    threshold, accuracy = best_threshold(np.array([0.2, 0.4]), np.array([True, True]))
    assert accuracy == 1.0 and threshold < 0.2
    threshold, accuracy = best_threshold(np.array([0.2, 0.4]), np.array([False, False]))
    assert accuracy == 1.0 and threshold > 0.4


def test_evaluate_needs_two_folds():
    with pytest.raises(ValueError, match="two folds"):
        evaluate_scores(np.array([0.1, 0.9]), np.array([False, True]), np.array([0, 0]))


def test_embed_pairs_and_pair_scores_on_arrays():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(5)]
    pairs = VerificationPairs(images, left=[0, 1, 2], right=[1, 3, 4], same=[True, False, True], folds=[0, 1, 2])
    batch_sizes = []

    def column_means(batch: np.ndarray) -> np.ndarray:
        batch_sizes.append(len(batch))
        return batch.astype(np.float32).mean(axis=(1, 3)) + 1.0  # [N, 4], changes when mirrored

    embeddings = embed_pairs(column_means, pairs, batch_size=2)
    assert batch_sizes == [2, 2, 1] and embeddings.shape == (5, 4)
    expected = np.stack([column_means(img[None])[0] for img in images])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
    scores = pair_scores(embeddings, pairs)
    np.testing.assert_allclose(scores, [expected[0] @ expected[1], expected[1] @ expected[3], expected[2] @ expected[4]], atol=1e-6)

    flipped = embed_pairs(column_means, pairs, batch_size=8, flip_test=True)
    mirrored = np.stack([column_means(img[None, :, ::-1])[0] for img in images])
    mirrored /= np.linalg.norm(mirrored, axis=1, keepdims=True)
    combined = expected + mirrored
    np.testing.assert_allclose(flipped, combined / np.linalg.norm(combined, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.realdata
def test_sface_separates_real_validation_pairs(facekd_home):
    """SFace on 25 same + 25 different pairs of val_pairs.txt's first fold (98 images)."""
    lfw = facekd_home / "data" / "lfw"
    pairs = read_lfw_pairs(lfw / "splits" / "val_pairs.txt", lfw / "aligned_112")
    assert len(pairs) == 1200 and np.bincount(pairs.folds).tolist() == [120] * 10
    first_fold = np.flatnonzero(pairs.folds == 0)
    chosen = np.concatenate([first_fold[pairs.same[first_fold]][:25], first_fold[~pairs.same[first_fold]][:25]])
    subset = pairs.subset(chosen)
    assert len(subset.images) <= 100
    subset.folds = np.arange(len(subset)) % 5
    teacher = OnnxTeacher(facekd_home / "models" / "sface" / "sface_fp32.onnx", SFACE)
    scores = pair_scores(embed_pairs(teacher.embed, subset, batch_size=50), subset)
    result = evaluate_scores(scores, subset.same, subset.folds)
    assert result.accuracy >= 0.95
    assert result.auc >= 0.98
    assert scores[subset.same].mean() > 0.5 > scores[~subset.same].mean()


def test_cross_validated_decisions_are_the_k_fold_protocol_pair_by_pair():
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.5
    scores = np.where(same, 0.6, 0.2) + rng.normal(0, 0.2, 400)
    folds = np.repeat(np.arange(10), 40)
    correct = cross_validated_decisions(scores, same, folds)
    result = evaluate_scores(scores, same, folds)
    assert result.fold_accuracies == pytest.approx([correct[folds == k].mean() for k in range(10)])


def test_mcnemar_counts_the_pairs_one_model_alone_gets_right():
    base = np.array([True] * 80 + [False] * 20)
    assert mcnemar(base, base) == {"only_a": 0, "only_b": 0, "p_value": 1.0}
    better = base.copy()
    better[80:95] = True  # 15 pairs only the new one gets right, none the other way
    result = mcnemar(better, base)
    assert (result["only_a"], result["only_b"]) == (15, 0) and result["p_value"] < 0.001
    nearly = base.copy()
    nearly[80:82], nearly[0] = True, False  # 2 against 1: no evidence either way
    assert mcnemar(nearly, base)["p_value"] > 0.5


def test_embed_once_embeds_each_distinct_face_once_and_answers_repeats_alike():
    faces = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    calls = []

    def features(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1)[:, :4].astype(np.float32) + 1

    def embed_fn(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return features(images)

    embed = embed_once(embed_fn)
    first = embed(faces[[0, 1, 1, 2]])  # a repeat inside one batch is embedded once
    second = embed(np.stack([faces[2], faces[3], faces[0].copy()]))  # equal pixels, another array
    assert calls == [3, 1]
    np.testing.assert_array_equal(first, features(faces[[0, 1, 1, 2]]))
    np.testing.assert_array_equal(second, features(faces[[2, 3, 0]]))
    embed(faces[:1].reshape(1, 16, 4, 3))  # the same bytes in another shape: another face
    assert calls == [3, 1, 1]

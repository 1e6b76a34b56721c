"""The measures users live by (all pairs of a set of identities, rank-1, open-set FNIR) and the
operating-point rule clients pick thresholds by: checked against brute force on generated
embeddings, refused on sets that cannot support them, and on real faces calibrated on some val
identities and tested on others."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta, binom

from facekd.cli import main
from facekd.core import verification
from facekd.core.operating_points import OperatingPointError, OperatingPoints
from facekd.core.verification import (IdentitySetError, all_pairs_scores, calibrate, equal_error_rate,
                                      identification_points, l2_normalise, measure_identities, operating_points,
                                      open_set_trials, open_set_at_threshold)


ZOO_STUDENT = Path(__file__).resolve().parents[1] / "zoo" / "sface-derived-k60" / "student.pt"


def clustered(identities: int, per_identity: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(identities), per_identity)
    return rng.normal(size=(identities, 32))[labels] + noise * rng.normal(size=(len(labels), 32)), labels


def brute_force(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    normalised = l2_normalise(embeddings)
    upper = np.triu_indices(len(labels), 1)
    scores = (normalised @ normalised.T)[upper].astype(np.float64)
    same = labels[upper[0]] == labels[upper[1]]
    return scores[same], scores[~same]


def test_all_pairs_in_chunks_equal_brute_force(monkeypatch):
    monkeypatch.setattr(verification, "PAIR_CHUNK", 7)  # many chunks, uneven last one
    embeddings, labels = clustered(60, 3, noise=1.2)
    genuine, impostors = brute_force(embeddings, labels)
    scores = all_pairs_scores(embeddings, labels)
    assert scores.impostor_pairs == len(impostors)
    np.testing.assert_allclose(scores.genuine, np.sort(genuine), atol=1e-6)
    kept = len(scores.top_impostors)
    assert kept == math.floor(0.01 * len(impostors)) + 1
    np.testing.assert_allclose(scores.top_impostors, np.sort(impostors)[::-1][:kept], atol=1e-6)
    at_or_above = [(impostors >= g).sum() for g in scores.genuine]
    np.testing.assert_array_equal(scores.impostors_at_or_above, at_or_above)
    false_reject = np.array([(genuine < g).mean() for g in scores.genuine])
    false_accept = np.asarray(at_or_above) / len(impostors)
    best = np.argmin(np.abs(false_accept - false_reject))
    assert equal_error_rate(scores) == pytest.approx((false_accept[best] + false_reject[best]) / 2)


def test_operating_points_hold_their_far_and_need_ten_impostors():
    embeddings, labels = clustered(150, 3, noise=1.5)
    genuine, impostors = brute_force(embeddings, labels)
    points = operating_points(all_pairs_scores(embeddings, labels), "generated", 150, len(labels))
    assert [p.far for p in points.points] == sorted((p.far for p in points.points), reverse=True)
    for point in points.points:
        above = int((impostors >= point.threshold).sum())
        assert above == point.impostors_above
        assert points.min_impostors <= above <= math.floor(point.far * len(impostors))
        assert beta.ppf(points.confidence, above + 1, len(impostors) - above) <= point.far  # holds with confidence
        assert point.tar == pytest.approx((genuine >= point.threshold).mean())
    assert points.smallest_far >= 10 / len(impostors)  # no FAR below what ten impostor pairs back


def test_only_supported_fars_are_reported_and_the_others_say_why():
    embeddings, labels = clustered(50, 3, noise=0.3)  # 11,025 impostor pairs: 1e-3 supported, 1e-4 not
    result = measure_identities(embeddings, labels, gallery_size=10)
    assert set(result.tar_at_far) == {"1e-03"}
    assert "needs 100,000 impostor pairs" in result.unsupported["1e-04"] and "have 11,025" in result.unsupported["1e-04"]
    assert result.rank1 == pytest.approx(1.0) and result.open_set["gallery_size"] == 10


def test_rank1_and_open_set_against_a_direct_count():
    embeddings, labels = clustered(30, 4, noise=2.5, seed=3)
    normalised = l2_normalise(embeddings)
    first = np.array([np.flatnonzero(labels == k)[0] for k in range(30)])
    probes = np.setdiff1d(np.arange(len(labels)), first)
    predicted = labels[first][np.argmax(normalised[probes] @ normalised[first].T, axis=1)]
    assert verification.rank1(embeddings, labels) == pytest.approx(np.mean(predicted == labels[probes]))
    trial = open_set_trials(embeddings, labels, gallery_size=10, trials=1, seed=5)[0]
    assert len(trial.stranger_scores) == 20 * 4 and len(trial.mated_scores) == 10 * 3
    measured = open_set_at_threshold([trial], 0.5)
    assert measured["fpir"] == pytest.approx(np.mean(trial.stranger_scores >= 0.5))


@pytest.mark.parametrize("labels, message", [
    (np.zeros(5, dtype=int), "1 identity: all-pairs measures need two or more"),
    (np.arange(5), "no identity has two faces"),
])
def test_sets_that_cannot_be_measured_are_refused(labels, message):
    with pytest.raises(IdentitySetError, match=message):
        measure_identities(np.random.default_rng(0).normal(size=(len(labels), 8)), labels)


def points_at(*fars_and_thresholds) -> OperatingPoints:
    points = [{"far": far, "threshold": t, "impostors_above": 10, "tar": 0.9} for far, t in fars_and_thresholds]
    return OperatingPoints(points, "test", 100, 300, 400, 1_000_000, 10, 0.95)


def test_the_rule_takes_the_largest_far_at_most_the_target_and_refuses_below_the_range():
    points = points_at((1e-3, 0.30), (1e-4, 0.40), (1e-5, 0.50))
    assert points.verification_threshold(1e-4) == 0.40
    assert points.verification_threshold(3e-4) == 0.40  # 1e-3 would let more impostors in
    assert points.identification_threshold(0.01, 100) == 0.40  # per-comparison FAR 1e-4
    assert points.identification_threshold(0.01, 101) == 0.50
    assert points.identification_threshold(0.01, 0) == 0.30  # an empty gallery compares like one template
    with pytest.raises(OperatingPointError, match="FAR 1e-06 is below the calibrated range: the smallest supported "
                                                  "FAR is 1e-05"):
        points.verification_threshold(1e-6)
    with pytest.raises(OperatingPointError, match="a gallery of 1001 templates at FPIR 0.01 .* enrol at most 1000"):
        points.identification_threshold(0.01, 1001)
    with pytest.raises(OperatingPointError, match=r"FPIR must lie in \(0, 1\)"):
        points.identification_threshold(1.5, 10)
    assert OperatingPoints.from_dict(json.loads(json.dumps(points.to_dict()))) == points


def test_identification_is_no_lower_than_the_calibrated_gallerys_threshold():
    """The Java core's OperatingPointsTest.identificationIsNoLowerThanTheCalibratedGallerysThreshold, in Python."""
    base = points_at((0.01, 0.21), (1e-3, 0.30), (1e-4, 0.37), (1e-5, 0.45), (7.8e-6, 0.47))
    galleries = [{"gallery_size": m, "fpir": f, "threshold": t, "strangers_above": 40, "probes": 50_000}
                 for m, f, t in ((10, 0.01, 0.33), (10, 0.001, 0.40), (100, 0.01, 0.41), (100, 0.001, 0.50))]
    points = OperatingPoints(**{**base.to_dict(), "identification": galleries})
    expected = {(0.01, 1): 0.33, (0.01, 10): 0.33, (0.01, 11): 0.41, (0.01, 100): 0.41, (0.01, 101): 0.45,
                (0.05, 100): 0.41, (0.005, 100): 0.50, (0.0009, 1): 0.37}
    assert {case: points.identification_threshold(*case) for case in expected} == expected
    assert points.verification_threshold(1e-4) == base.verification_threshold(1e-4)
    assert OperatingPoints.from_dict(json.loads(json.dumps(points.to_dict()))) == points
    with pytest.raises(OperatingPointError, match="gallery_size >= 1"):
        OperatingPoints(**{**base.to_dict(), "identification": [{**galleries[0], "gallery_size": 0}]})


def test_gallery_points_hold_their_fpir_on_the_galleries_they_were_calibrated_on():
    embeddings, labels = clustered(150, 3, noise=1.2)
    points = identification_points(l2_normalise(embeddings), labels)
    assert {p.gallery_size for p in points} == {10, 30, 100}  # 300 and 200 need more identities than 150
    for point in points:
        trials = open_set_trials(embeddings, labels, point.gallery_size, verification.CALIBRATION_TRIALS, seed=1)
        strangers = np.concatenate([t.stranger_scores for t in trials])
        assert point.probes == len(strangers) and point.strangers_above == np.sum(strangers >= point.threshold)
        assert verification.MIN_IMPOSTORS <= point.strangers_above <= point.fpir * point.probes
        assert beta.ppf(0.95, point.strangers_above + 1, point.probes - point.strangers_above) <= point.fpir


def test_eval_on_a_folder_of_one_identity_is_one_line_error(tiny_faces, tmp_path, capsys):
    one = tmp_path / "one"
    (one / "solo").mkdir(parents=True)
    for index, source in enumerate(sorted(tiny_faces.rglob("*.jpg"))[:3]):
        (one / "solo" / f"{index}.jpg").write_bytes(source.read_bytes())
    assert main(["--quiet", "eval", "--checkpoint", str(ZOO_STUDENT), "--identities", str(one)]) == 2
    assert "all-pairs measures need two or more" in capsys.readouterr().err


@pytest.fixture(scope="module")
def val_faces(facekd_home):
    """The zoo student's embeddings of every face of the 500 val identities (never trained on)."""
    from facekd.training.checkpoint import load_student
    from facekd.core.data import FaceFolder, read_identity_list
    from facekd.core.verification import embed_folder
    from facekd.training.evaluate import student_embed_fn

    lfw = facekd_home / "data" / "lfw"
    folder = FaceFolder(lfw / "aligned_112", identities=read_identity_list(lfw / "splits" / "val_identities.txt"))
    model, spec, _ = load_student(ZOO_STUDENT)
    return embed_folder(student_embed_fn(model, spec), folder), folder.labels


def test_on_real_faces_strangers_stay_under_the_fpir_when_calibrated_on_other_people(val_faces):
    """Operating points (all pairs and open-set galleries) from half the val identities; on the other half,
    100 people enrolled (5 random galleries): strangers are matched to someone at most at the FPIR, enrolled
    people still found. On a finite set of strangers "at most 1 %" is a one-sided binomial test:
    the count matched must not be significantly above 1 % of them (5 % level)."""
    embeddings, labels = val_faces
    calibration = labels % 2 == 0
    points = calibrate(embeddings[calibration], labels[calibration], "even val identities")
    assert {p.gallery_size for p in points.identification} >= {10, 30, 100}
    threshold = points.identification_threshold(0.01, 100)
    trials = open_set_trials(embeddings[~calibration], labels[~calibration], gallery_size=100, trials=5)
    strangers = sum(len(t.stranger_scores) for t in trials)
    matched = sum(int(np.sum(t.stranger_scores >= threshold)) for t in trials)
    assert strangers > 1000 and matched <= binom.ppf(0.95, strangers, 0.01), (matched, strangers)
    assert open_set_at_threshold(trials, threshold)["fnir"] < 0.2
    assert threshold >= points.verification_threshold(1e-4)  # 1 % over 100 templates is 1e-4 per comparison

"""LFW pairs.txt parsing and the restricted reader for insightface .bin verification sets."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekd.core.pairs import (
    PairsError,
    VerificationPairs,
    read_insightface_bin,
    read_insightface_bin_pairs,
    read_lfw_pairs,
)

PAIRS_TXT = """2\t1
alice\t1\t2
alice\t1\tbob\t1
bob\t1\t2
carol\t1\talice\t2
"""


def make_lfw_tree(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for number in range(1, count + 1):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(b"jpeg")
    return root


def test_read_lfw_pairs_builds_unique_images_folds_and_labels(tmp_path):
    root = make_lfw_tree(tmp_path / "faces", {"alice": 2, "bob": 2, "carol": 1})
    (tmp_path / "pairs.txt").write_text(PAIRS_TXT)
    pairs = read_lfw_pairs(tmp_path / "pairs.txt", root)
    names = [path.relative_to(root).as_posix() for path in pairs.images]
    assert names == ["alice/alice_0001.jpg", "alice/alice_0002.jpg", "bob/bob_0001.jpg", "bob/bob_0002.jpg", "carol/carol_0001.jpg"]
    np.testing.assert_array_equal(pairs.left, [0, 0, 2, 4])
    np.testing.assert_array_equal(pairs.right, [1, 2, 3, 1])
    np.testing.assert_array_equal(pairs.same, [True, False, True, False])
    np.testing.assert_array_equal(pairs.folds, [0, 0, 1, 1])
    assert len(pairs) == 4 and pairs.name == "pairs"


def test_read_lfw_pairs_names_first_missing_image(tmp_path):
    root = make_lfw_tree(tmp_path / "faces", {"alice": 2, "bob": 1, "carol": 1})
    (tmp_path / "pairs.txt").write_text(PAIRS_TXT)
    with pytest.raises(PairsError, match=r"pairs.txt:4: image .*bob_0002.jpg does not exist"):
        read_lfw_pairs(tmp_path / "pairs.txt", root)


@pytest.mark.parametrize(
    "text, message",
    [
        ("2\t1\nalice\t1\t2\n", "header promises"),
        ("1\t1\nalice\t1\t2\nalice\t1\n", r"pairs.txt:3: expected"),
        ("ten folds\nalice\t1\t2\n", "first line"),
    ],
)
def test_read_lfw_pairs_rejects_malformed_files(tmp_path, text, message):
    root = make_lfw_tree(tmp_path / "faces", {"alice": 2})
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(PairsError, match=message):
        read_lfw_pairs(tmp_path / "pairs.txt", root)


def test_subset_keeps_only_used_images(tmp_path):
    root = make_lfw_tree(tmp_path / "faces", {"alice": 2, "bob": 2, "carol": 1})
    (tmp_path / "pairs.txt").write_text(PAIRS_TXT)
    pairs = read_lfw_pairs(tmp_path / "pairs.txt", root)
    subset = pairs.subset([2, 3])
    assert [p.name for p in subset.images] == ["alice_0002.jpg", "bob_0001.jpg", "bob_0002.jpg", "carol_0001.jpg"]
    for k, original in enumerate([2, 3]):
        assert subset.images[subset.left[k]] == pairs.images[pairs.left[original]]
        assert subset.images[subset.right[k]] == pairs.images[pairs.right[original]]
    np.testing.assert_array_equal(subset.same, [True, False])
    np.testing.assert_array_equal(subset.folds, [1, 1])


def encoded_faces(count: int) -> tuple[list[bytes], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(count)]
    return [cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes() for img in images], images


@pytest.mark.parametrize("protocol", [2, 4])
def test_read_insightface_bin_decodes_images_and_flags(tmp_path, protocol):
    encoded, images = encoded_faces(40)
    issame = [bool(k % 2 == 0) for k in range(20)]
    path = tmp_path / "set.bin"
    path.write_bytes(pickle.dumps((encoded, issame), protocol=protocol))
    decoded, same = read_insightface_bin(path)
    assert len(decoded) == 40
    for got, want in zip(decoded, images):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(same, issame)
    pairs = read_insightface_bin_pairs(path)
    np.testing.assert_array_equal(pairs.left, np.arange(0, 40, 2))
    np.testing.assert_array_equal(pairs.right, np.arange(1, 40, 2))
    np.testing.assert_array_equal(np.bincount(pairs.folds), [2] * 10)
    np.testing.assert_array_equal(pairs.load_image(3), images[3])


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_read_insightface_bin_refuses_code_in_the_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    encoded, _ = encoded_faces(2)
    path.write_bytes(pickle.dumps((encoded, [RunsACommand(marker)]), protocol=2))
    with pytest.raises(PairsError, match="refused"):
        read_insightface_bin(path)
    assert not marker.exists()


def test_read_insightface_bin_refuses_numpy_objects(tmp_path):
    encoded, _ = encoded_faces(2)
    path = tmp_path / "numpy.bin"
    path.write_bytes(pickle.dumps((encoded, [np.bool_(True)])))
    with pytest.raises(PairsError, match="refused.*numpy"):
        read_insightface_bin(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (([b"x"], [True]), "two images per pair"),
        (([b"not an image", b"not either"], [True]), "cannot be decoded"),
        (([b"a", b"b"],), "expected a pickled"),
        ((["text", "text"], [True]), "encoded image bytes"),
    ],
)
def test_read_insightface_bin_rejects_wrong_content(tmp_path, content, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(PairsError, match=message):
        read_insightface_bin(path)


def test_verification_pairs_checks_indices():
    with pytest.raises(PairsError, match="beyond"):
        VerificationPairs(images=[Path("a.jpg")], left=[0], right=[1], same=[True], folds=[0])

"""FaceFolder, identity lists and IdentityBalancedSampler on tiny generated data."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekd.core.data import (
    UNLABELLED,
    BadImageError,
    DatasetError,
    FaceFolder,
    load_rgb_file,
    read_identity_list,
)
from facekd.training.sampler import IdentityBalancedSampler



def write_rgb(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))


def make_faces(root: Path, counts: dict[str, int], size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for identity, count in counts.items():
        for number in range(1, count + 1):
            write_rgb(root / identity / f"{identity}_{number:04d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def test_load_rgb_file_returns_rgb_order(tmp_path):
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    write_rgb(tmp_path / "red.png", image)
    loaded = load_rgb_file(tmp_path / "red.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 6, 3)
    np.testing.assert_array_equal(loaded, image)


@pytest.mark.parametrize("content", [None, b"", b"not an image at all"])
def test_load_rgb_file_names_missing_or_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match="broken.jpg"):
        load_rgb_file(path)


def test_face_folder_lists_samples_and_labels(tmp_path):
    root = make_faces(tmp_path, {"bob": 2, "alice": 3})
    (root / "alice" / "notes.txt").write_text("not an image")
    folder = FaceFolder(root)
    assert folder.classes == ["alice", "bob"]
    assert folder.samples[0] == ("alice/alice_0001.png", 0)
    assert [label for _, label in folder.samples] == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(folder.labels, [0, 0, 0, 1, 1])
    assert len(folder) == 5
    assert folder.load_rgb(3).shape == (16, 16, 3)


def test_identity_list_sets_label_order_and_subset(tmp_path):
    root = make_faces(tmp_path / "faces", {"alice": 1, "bob": 2, "carol": 1})
    folder = FaceFolder(root, identities=["carol", "bob"])
    assert folder.classes == ["carol", "bob"]
    assert folder.samples == [("carol/carol_0001.png", 0), ("bob/bob_0001.png", 1), ("bob/bob_0002.png", 1)]


def test_unknown_identities_are_named(tmp_path):
    root = make_faces(tmp_path, {"alice": 1})
    with pytest.raises(DatasetError, match="dave.*zoe|2 listed identities"):
        FaceFolder(root, identities=["alice", "zoe", "dave"])


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FaceFolder(tmp_path / "nowhere")


def test_unlabelled_folders_expand_variables_and_name_an_unset_one(tmp_path, monkeypatch):
    root = make_faces(tmp_path / "faces", {"alice": 2})
    make_faces(tmp_path / "home" / "extra", {"anyone": 3})
    monkeypatch.setenv("FACES_HOME", str(tmp_path / "home"))
    folder = FaceFolder(root, unlabelled=["$FACES_HOME/extra"])
    assert folder.unlabelled_roots == [tmp_path / "home" / "extra"]
    assert list(folder.labels).count(UNLABELLED) == 3
    monkeypatch.delenv("FACES_HOME")
    with pytest.raises(DatasetError, match=r"\$FACES_HOME/extra does not exist \(an environment variable.*unlabelled=\[\]"):
        FaceFolder(root, unlabelled=["$FACES_HOME/extra"])


def test_file_list_digest_tracks_file_list_and_labels(tmp_path):
    root = make_faces(tmp_path, {"alice": 2, "bob": 1})
    digest = FaceFolder(root).file_list_digest()
    assert FaceFolder(root).file_list_digest() == digest
    assert FaceFolder(root, identities=["bob", "alice"]).file_list_digest() != digest
    make_faces(tmp_path, {"bob": 2})
    assert FaceFolder(root).file_list_digest() != digest


def test_corrupt_image_raises_or_is_skipped(tmp_path):
    root = make_faces(tmp_path, {"alice": 2, "bob": 2})
    (root / "bob" / "bob_0002.png").write_bytes(b"\x89PNG truncated")
    strict = FaceFolder(root)
    with pytest.raises(BadImageError, match="bob_0002.png"):
        strict.load_rgb(3)
    lenient = FaceFolder(root, skip_bad=True)
    assert lenient.skipped == ["bob/bob_0002.png"]
    assert len(lenient) == 3 and "bob/bob_0002.png" not in [path for path, _ in lenient.samples]


def test_read_identity_list(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# training identities\nalice\n\n  bob  \n")
    assert read_identity_list(path) == ["alice", "bob"]
    path.write_text("alice\nbob\nalice\n")
    with pytest.raises(DatasetError, match="alice.*twice.*line 3"):
        read_identity_list(path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_identity_list(tmp_path / "missing.txt")


def uneven_labels() -> np.ndarray:
    """12 identities with 1..12 images each (78 images)."""
    return np.repeat(np.arange(12), np.arange(1, 13))


def test_sampler_batches_hold_p_identities_of_k_images():
    labels = uneven_labels()
    sampler = IdentityBalancedSampler(labels, identities_per_batch=4, images_per_identity=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(np.ceil(len(labels) / 12))
    for batch in batches:
        assert len(batch) == 12
        groups = [labels[batch[i : i + 3]] for i in range(0, 12, 3)]
        assert all(len(set(group)) == 1 for group in groups), "each K-run is one identity"
        assert len({int(group[0]) for group in groups}) == 4, "P distinct identities"


def test_sampler_uses_single_image_identities_with_replacement():
    labels = np.array([0, 1, 2, 3, 4, 4, 4, 4])
    sampler = IdentityBalancedSampler(labels, identities_per_batch=2, images_per_identity=4, seed=0, drop_last=False)
    seen = Counter()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        for batch in sampler:
            seen.update(labels[batch[i]] for i in range(0, len(batch), 4))
            for i in range(0, len(batch), 4):
                if labels[batch[i]] == 0:
                    assert batch[i : i + 4] == [0, 0, 0, 0]
    assert set(seen) == {0, 1, 2, 3, 4}


def test_sampler_is_deterministic_per_seed_and_epoch():
    labels = uneven_labels()
    first = IdentityBalancedSampler(labels, 3, 2, seed=7)
    second = IdentityBalancedSampler(labels, 3, 2, seed=7)
    assert list(first) == list(second)
    second.set_epoch(1)
    assert list(first) != list(second)
    assert list(IdentityBalancedSampler(labels, 3, 2, seed=8)) != list(first)


def test_sampler_covers_most_images_each_epoch():
    labels = np.repeat(np.arange(20), 8)  # equal identities: every group is full, nothing repeats
    batches = list(IdentityBalancedSampler(labels, 4, 4, seed=3))
    drawn = [i for batch in batches for i in batch]
    assert len(drawn) == len(labels) and len(set(drawn)) == len(labels)


@pytest.mark.parametrize("drop_last", [True, False])
def test_sampler_ranks_get_disjoint_equal_shares(drop_last):
    labels = uneven_labels()  # 78 images, P*K=6 -> 13 batches overall
    world = [IdentityBalancedSampler(labels, 3, 2, seed=5, rank=r, world_size=3, drop_last=drop_last) for r in range(3)]
    shares = [list(sampler) for sampler in world]
    expected = 13 // 3 if drop_last else -(-13 // 3)
    assert all(len(share) == len(sampler) == expected for share, sampler in zip(shares, world))
    all_batches = [tuple(batch) for share in shares for batch in share]
    assert len(set(all_batches)) == len(all_batches), "no batch is given to two ranks"
    interleaved = [shares[i % 3][i // 3] for i in range(3 * expected)]
    single_rank = list(IdentityBalancedSampler(labels, 3, 2, seed=5))
    shared = min(len(single_rank), len(interleaved))
    assert interleaved[:shared] == single_rank[:shared], "ranks deal out the single-rank order"


def test_sampler_rejects_too_few_identities():
    with pytest.raises(ValueError, match="distinct identities"):
        IdentityBalancedSampler(np.array([0, 0, 1]), identities_per_batch=3, images_per_identity=2)


def test_sampler_batches_hold_k_faces_of_p_identities(tmp_path):
    folder = FaceFolder(make_faces(tmp_path, {"a": 3, "b": 1, "c": 2}))
    sampler = IdentityBalancedSampler(folder.labels, 2, 2, seed=0)
    batch = next(iter(sampler))
    labels = folder.labels[np.asarray(batch)]
    assert len(batch) == 4 and sorted(np.unique(labels, return_counts=True)[1].tolist()) == [2, 2]

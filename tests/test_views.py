"""Consistent views: deterministic pixels, the view cache's key and resume, the trainer drawing
exactly the pixels the teacher embedded, and the online teacher."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.config import load_config
from facekd.core.data import UNLABELLED, FaceFolder
from facekd.training.online import OnlineTeacher
from facekd.core.preprocess import PreprocessSpec
from facekd.training.teacher_cache import StaleCacheError, ViewCache, build_view_cache, view_cache_key
from facekd.training.trainer import Trainer, normalise_batch
from facekd.training.views import ViewSpec, make_view, view_parameters

SPEC = ViewSpec(seed=3, lowres=0.5, blur=0.5, jpeg=0.5, grayscale=0.3)


class PixelTeacher:
    """Embeds a face as its mean colour per 16-px row band, and records every image it saw."""

    embedding_size = 21
    preprocess = PreprocessSpec(mean=(0.0,) * 3, std=(1.0,) * 3)

    def __init__(self, identity: str = "pixels-v1", fail_after_calls: int | None = None):
        self.identity, self.fail_after_calls, self.calls, self.seen = identity, fail_after_calls, 0, []

    def embed(self, images: np.ndarray) -> np.ndarray:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("killed mid-build")
        self.calls += 1
        self.seen.extend(np.array(images))
        bands = images.astype(np.float32).reshape(len(images), 7, 16, 112, 3).mean(axis=(2, 3)).reshape(len(images), -1)
        bands += 1.0
        return bands / np.linalg.norm(bands, axis=1, keepdims=True)


@pytest.fixture
def face(tiny_faces) -> np.ndarray:
    return FaceFolder(tiny_faces).load_rgb(0)


def test_view_is_a_pure_function_of_image_view_id_and_spec(face):
    first = make_view(face, SPEC, 5, 2)
    assert np.array_equal(first, make_view(face.copy(), SPEC, 5, 2))
    assert first.shape == face.shape and first.dtype == np.uint8
    assert not np.array_equal(first, make_view(face, SPEC, 5, 3))
    assert not np.array_equal(first, make_view(face, SPEC, 6, 2))
    assert not np.array_equal(first, make_view(face, replace(SPEC, seed=4), 5, 2))
    assert np.array_equal(make_view(face, SPEC, 5, 0), face)  # view 0 is the image itself


def test_view_parameters_stay_within_the_spec_bounds():
    for view in range(1, 200):
        p = view_parameters(SPEC, 7, view)
        assert SPEC.scale[0] <= p["scale"] <= SPEC.scale[1]
        assert abs(p["angle"]) <= SPEC.rotate_deg and abs(p["dx"]) <= SPEC.shift and abs(p["dy"]) <= SPEC.shift
        assert p["lowres_side"] == 0 or SPEC.lowres_side[0] <= p["lowres_side"] <= SPEC.lowres_side[1]
        assert p["jpeg_quality"] == 0 or SPEC.jpeg_quality[0] <= p["jpeg_quality"] <= SPEC.jpeg_quality[1]
    flips = [view_parameters(SPEC, 7, v)["flip"] for v in range(1, 400)]
    assert 0.35 < np.mean(flips) < 0.65


def test_spec_rejects_bounds_that_would_break_alignment():
    with pytest.raises(ValueError, match="keep faces aligned"):
        ViewSpec(rotate_deg=45)
    with pytest.raises(ValueError, match="probability"):
        ViewSpec(jpeg=1.5)


def test_view_cache_stores_the_teacher_embedding_of_each_view(tiny_faces, tmp_path):
    folder = FaceFolder(tiny_faces)
    teacher = PixelTeacher()
    cache = build_view_cache(teacher, folder, tmp_path / "views", SPEC, views=3, batch_size=7, progress=False)
    assert cache.embeddings.shape == (len(folder), 3, teacher.embedding_size)
    for index in (0, 5, len(folder) - 1):
        for view in range(3):
            expected = PixelTeacher().embed(make_view(folder.load_rgb(index), SPEC, index, view)[None])[0]
            np.testing.assert_allclose(cache.embeddings[index, view], expected, rtol=1e-6)


def test_view_cache_key_covers_spec_and_view_count_and_a_killed_build_resumes(tiny_faces, tmp_path):
    folder = FaceFolder(tiny_faces)
    dying = PixelTeacher(fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        build_view_cache(dying, folder, tmp_path / "views", SPEC, views=2, batch_size=4, progress=False)
    key = view_cache_key(PixelTeacher(), folder, SPEC, 2)
    with pytest.raises(StaleCacheError, match="incomplete"):
        ViewCache.open(tmp_path / "views", key, SPEC)
    resumed = PixelTeacher()
    cache = build_view_cache(resumed, folder, tmp_path / "views", SPEC, views=2, batch_size=4, progress=False)
    assert len(resumed.seen) == 2 * (len(folder) - 4)  # only the images the killed build had not done
    fresh = build_view_cache(PixelTeacher(), folder, tmp_path / "fresh", SPEC, views=2, batch_size=4, progress=False)
    np.testing.assert_array_equal(cache.embeddings, fresh.embeddings)

    for other in (view_cache_key(PixelTeacher(), folder, replace(SPEC, rotate_deg=3.0), 2),
                  view_cache_key(PixelTeacher(), folder, SPEC, 3),
                  view_cache_key(PixelTeacher("pixels-v2"), folder, SPEC, 2)):
        assert other != key
        with pytest.raises(StaleCacheError, match="stale"):
            ViewCache.open(tmp_path / "views", other, SPEC)


def _tiny_cfg(tiny_faces, tmp_path, *extra):
    return load_config(None, [
        f"data.aligned_root={tiny_faces}", "student.width=0.25", "data.identities_per_batch=3",
        "data.images_per_identity=2", "train.epochs=1", "train.threads=1", "train.queue_size=8",
        "loss.fcd=1.0", "teacher.with_flip=false", *extra])


class _Cache:
    """The plain cache the trainer also reads (queue, sizes), from the same teacher."""

    def __init__(self, teacher, folder):
        self.embeddings = teacher.embed(np.stack([folder.load_rgb(i) for i in range(len(folder))]))
        self.flipped = None


def test_trainer_draws_the_stored_views_with_their_teacher_embeddings(tiny_faces, tmp_path):
    folder = FaceFolder(tiny_faces)
    views = build_view_cache(PixelTeacher(), folder, tmp_path / "views", SPEC, views=4, progress=False)
    cfg = _tiny_cfg(tiny_faces, tmp_path, "teacher.views=4")
    cfg.teacher.preprocess = PixelTeacher.preprocess
    trainer = Trainer(cfg, tmp_path / "run", _Cache(PixelTeacher(), folder), folder, progress=False, views=views)
    indices = list(range(len(folder)))
    x, labels, teacher, _, _, teacher_maps = trainer._batch(indices)
    assert teacher_maps is None  # no loss.hint
    drawn = []
    for row, index in enumerate(indices):
        matches = [v for v in range(4) if np.allclose(views.embeddings[index, v], teacher[row].numpy())]
        assert len(matches) >= 1
        view = matches[0]
        pixels = make_view(folder.load_rgb(index), SPEC, index, view)
        expected = normalise_batch(torch.from_numpy(pixels[None]), trainer.spec)[0]
        torch.testing.assert_close(x[row], expected)
        drawn.append(view)
    assert len(set(drawn)) > 1  # different images got different stored views
    assert labels.tolist() == folder.labels.tolist()


def test_online_teacher_embeds_the_exact_batch_it_returns_and_mixup_drops_labels(tiny_faces):
    folder = FaceFolder(tiny_faces)
    images = torch.from_numpy(np.stack([folder.load_rgb(i) for i in range(len(folder))]))
    labels = torch.from_numpy(folder.labels)
    teacher = PixelTeacher()
    online = OnlineTeacher(teacher, labels, SPEC, mixup=0.0, seed=1)
    online.prefetch(0, [0, 1, 2], images[:3])
    views, embedded, got_labels = online.take(0, [0, 1, 2], images[:3])
    np.testing.assert_allclose(embedded.numpy(), PixelTeacher().embed(views.numpy()), rtol=1e-6)
    assert not torch.equal(views, images[:3])  # augmented, not the stored images
    assert got_labels.tolist() == folder.labels[:3].tolist()
    again, _, _ = online.make_batch(0, [0, 1, 2], images[:3])
    assert torch.equal(again, views)  # deterministic per step
    online.close()

    mixing = OnlineTeacher(PixelTeacher(), labels, SPEC, mixup=1.0, seed=1)
    mixed, mixed_teacher, mixed_labels = mixing.take(0, [0, 4, 8, 12], images[[0, 4, 8, 12]])
    assert (mixed_labels == UNLABELLED).all()
    np.testing.assert_allclose(mixed_teacher.numpy(), PixelTeacher().embed(mixed.numpy()), rtol=1e-6)
    mixing.close()

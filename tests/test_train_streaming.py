"""Streaming training images (data.preload=false): the same weights as preloading them, for a folder
and a RecordIO set, with flips, unlabelled faces, consistent views, the online teacher, feature
hints and a resume mid-epoch; under DDP each rank decodes only its own batches, in its workers."""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest
import torch

from facekd.config import load_config, save_config
from facekd.stages import ensure_teacher_cache, train_student
from facekd.training.checkpoint import load_checkpoint
from facekd.core.data import BadImageError
from facekd.training.images import PRELOAD_BUDGET_BYTES, PreloadedImages, StreamedImages, open_images, should_preload
from facekd.training.recordio import RecordIOFaces
from facekd.training.sampler import IdentityBalancedSampler
from facekd.training.trainer import Trainer, _fingerprint, open_training_data
from tests.conftest import run_torchrun
from tests.test_recordio import recordio_faces  # noqa: F401  (fixture)
from tests.test_trainer import tiny_config, tiny_pairs, tiny_teacher, unlabelled_faces  # noqa: F401  (fixtures)


def assert_same_weights(a: Path, b: Path) -> None:
    want, got = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def forbid_preloading(monkeypatch) -> None:
    """From here on, a run that decodes the whole set into memory fails."""
    def refuse(*_, **__):
        raise AssertionError("the streaming run preloaded the training set")

    monkeypatch.setattr(PreloadedImages, "__init__", refuse)


def test_auto_preloads_up_to_the_budget_and_the_setting_is_not_part_of_the_run():
    assert should_preload("auto", 7907, 112)                    # LFW: 0.3 GB
    assert not should_preload("auto", 5_100_000, 112)           # MS1MV3: ≈ 190 GB
    assert should_preload("auto", PRELOAD_BUDGET_BYTES // (112 * 112 * 3), 112)
    assert not should_preload("auto", PRELOAD_BUDGET_BYTES // (112 * 112 * 3) + 1, 112)
    assert should_preload(True, 10**9, 112) and not should_preload(False, 1, 112)
    assert load_config(None, ["data.preload=false"]).data.preload is False
    assert load_config(None, ["data.preload='true'"]).data.preload is True
    with pytest.raises(Exception, match="data.preload must be auto, true or false"):
        load_config(None, ["data.preload=sometimes"])
    # a run started streaming may be resumed preloading (and the other way round)
    assert (_fingerprint(load_config(None, ["data.preload=false", "data.loader_workers=4"]))
            == _fingerprint(load_config(None, ["data.preload=true"])))
    # a key at its default does not count, so runs started before a key existed still resume
    assert (_fingerprint(load_config(None, ["train.int8_aware_epochs=0", "train.init_from=''"]))
            == _fingerprint(load_config(None, [])))
    assert _fingerprint(load_config(None, ["train.int8_aware_epochs=1"])) != _fingerprint(load_config(None, []))


def test_streamed_folder_with_unlabelled_faces_resumed_mid_epoch_matches_preloaded(
        tiny_faces, tiny_teacher, tiny_pairs, unlabelled_faces, tmp_path, monkeypatch):  # noqa: F811
    common = [f"data.unlabelled=[{unlabelled_faces}]", "data.unlabelled_per_batch=2", "train.checkpoint_every_steps=1"]
    preloaded = train_student(tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, *common,
                                          "data.preload=true"), tmp_path / "preloaded", progress=False)
    streamed_cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, *common, "data.preload=false",
                               "data.loader_workers=2")
    forbid_preloading(monkeypatch)
    real_step, calls, seen = Trainer._step, {"n": 0}, []

    def crashing_step(self, indices, images=None):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 steps per epoch: mid second epoch
            raise RuntimeError("simulated kill")
        seen.append(list(indices))
        return real_step(self, indices, images)

    monkeypatch.setattr(Trainer, "_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_student(streamed_cfg, tmp_path / "streamed", progress=False)
    resumed = train_student(streamed_cfg, tmp_path / "streamed", resume=True, progress=False)
    assert len(seen) == 8 and all(len(batch) == 6 + 2 for batch in seen)  # labelled + unlabelled faces
    assert_same_weights(preloaded.student_path, resumed.student_path)


def test_streamed_recordio_matches_preloaded(recordio_faces, tiny_teacher, tiny_pairs, tmp_path,  # noqa: F811
                                             monkeypatch):
    def run(name: str, *extra: str):
        cfg = tiny_config(recordio_faces, tiny_teacher, tiny_pairs, tmp_path, "data.source=recordio",
                          "data.val_pairs=", "train.epochs=1", *extra)
        return train_student(cfg, tmp_path / name, progress=False).student_path

    preloaded = run("preloaded", "data.preload=true")
    forbid_preloading(monkeypatch)
    assert_same_weights(preloaded, run("streamed", "data.preload=false", "data.loader_workers=1"))


@pytest.mark.parametrize("mode", ["views", "online", "hint"])
def test_streamed_views_online_teacher_and_hints_match_preloaded(mode, tiny_faces, tiny_teacher, tiny_pairs,  # noqa: F811
                                                                 tmp_path):
    teacher, extra = tiny_teacher, {"views": ["teacher.views=2"],
                                    "online": ["teacher.mode=online", "teacher.mixup=0.5"],
                                    "hint": ["loss.hint=1.0"]}[mode]
    if mode == "hint":
        from tests.test_derived import ChainTeacher, _export

        teacher = _export(ChainTeacher(rank1_head=True), tmp_path / "chain.onnx")
        extra += ["student.family=teacher_derived", "student.keep_ratio=0.5", "teacher.preprocess.mean=[0,0,0]",
                  "teacher.preprocess.std=[1,1,1]"]
    paths = {}
    for preload in ("true", "false"):
        cfg = tiny_config(tiny_faces, teacher, tiny_pairs, tmp_path, *extra, "train.epochs=1",
                          "train.max_steps_per_epoch=3", "data.loader_workers=1", f"data.preload={preload}",
                          "data.val_pairs=")
        paths[preload] = train_student(cfg, tmp_path / preload, progress=False).student_path
    assert_same_weights(paths["true"], paths["false"])


def test_a_bad_image_met_while_streaming_is_named_in_one_line(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):  # noqa: F811
    faces = tmp_path / "faces"
    shutil.copytree(tiny_faces, faces)
    bad = faces / "person_2" / "person_2_0003.jpg"
    bad.write_bytes(b"not a jpeg")
    cfg = tiny_config(faces, tiny_teacher, tiny_pairs, tmp_path, "data.preload=false", "data.loader_workers=1")
    folder = open_training_data(cfg)
    images = open_images(folder, cfg.student.preprocess, cfg.data.preload, cfg.data.loader_workers)
    assert isinstance(images, StreamedImages)
    index = folder.samples.index(("person_2/person_2_0003.jpg", 2))
    with pytest.raises(BadImageError) as caught:
        list(images.batches([[0, 1], [index, 3]]))
    assert "person_2_0003.jpg" in str(caught.value) and "\n" not in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_ddp_streaming_each_rank_decodes_only_its_own_batches_in_its_workers(recordio_faces, tiny_teacher,  # noqa: F811
                                                                              tiny_pairs, tmp_path, monkeypatch):
    cfg = tiny_config(recordio_faces, tiny_teacher, tiny_pairs, tmp_path, "data.source=recordio", "data.val_pairs=",
                      "train.epochs=1", "data.preload=false", "data.loader_workers=1")
    save_config(cfg, tmp_path / "cfg.yaml")
    ensure_teacher_cache(cfg, progress=False)  # built beforehand: its decoding is not training's
    log = tmp_path / "decoded"
    log.mkdir()
    monkeypatch.setenv("FACEKD_DECODE_LOG", str(log))
    run_torchrun("train", "--config", tmp_path / "cfg.yaml", "--out", tmp_path / "ddp", module="tests.decode_probe")

    decoded = collections.defaultdict(list)
    for path in log.iterdir():
        rank, role, _ = path.stem.split("-")
        assert role == "worker", f"{path.name}: a face was decoded outside the loader's workers"
        decoded[int(rank[4:])] += [int(line) for line in path.read_text().split()]
    labels = RecordIOFaces(recordio_faces).labels
    for rank in (0, 1):
        sampler = IdentityBalancedSampler(labels, 3, 2, seed=0, rank=rank, world_size=2)
        own = [i for batch in sampler for i in batch]
        assert len(own) == 12  # 24 faces in batches of 6 over two ranks: two batches each
        assert collections.Counter(decoded[rank]) == collections.Counter(own), rank
    assert not set(decoded[0]) & set(decoded[1])  # this epoch's batches share no face
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["global_step"] == 2

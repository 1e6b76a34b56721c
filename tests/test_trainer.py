"""Trainer: end-to-end on tiny generated faces with a tiny ONNX teacher; resume after a crash; DDP."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.config import load_config
from facekd.stages import ensure_teacher_cache, train_student
from facekd.training.checkpoint import load_checkpoint, load_student
from facekd.core.preprocess import PreprocessSpec
from facekd.training.trainer import Trainer, TrainingError, lr_factor, normalise_batch, open_training_data
from facekd.core.data import FaceFolder
from tests.conftest import run_torchrun


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A small random conv net as an ONNX teacher: [N,3,112,112] -> [N,16]."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, 8), torch.nn.ReLU(), torch.nn.AvgPool2d(7),
                              torch.nn.Flatten(), torch.nn.Linear(32, 16)).eval()
    path = tmp_path_factory.mktemp("teacher") / "teacher.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 112, 112),), str(path), input_names=["data"], output_names=["fc1"],
                      dynamic_axes={"data": {0: "n"}, "fc1": {0: "n"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def tiny_pairs(tiny_faces, tmp_path_factory) -> Path:
    """10 folds × (1 positive + 1 negative) over the tiny faces, LFW pairs.txt format."""
    lines = ["10\t1"]
    for fold in range(10):
        a = fold % 6
        lines.append(f"person_{a}\t1\t{2 + fold % 3}")
        lines.append(f"person_{a}\t1\tperson_{(a + 1) % 6}\t{1 + fold % 4}")
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, *extra):
    return load_config(None, [
        f"data.aligned_root={tiny_faces}", f"data.val_pairs={tiny_pairs}", f"teacher.path={tiny_teacher}",
        f"teacher.cache_dir={tmp_path / 'cache'}", "teacher.batch_size=8",
        "student.width=0.25", "data.identities_per_batch=3", "data.images_per_identity=2",
        "train.epochs=2", "train.queue_size=16", "train.threads=1", "optim.lr=0.05",
        "loss.fcd=1.0", "loss.rad=1.0", "loss.exclusivity=0.1", "loss.hard_fcd=0.5", *extra,
    ])


def test_normalise_batch_matches_preprocess_spec():
    images = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    for spec in (PreprocessSpec(), PreprocessSpec(channel_order="BGR", mean=(1, 2, 3), std=(4, 5, 6))):
        ours = normalise_batch(torch.from_numpy(images), spec).numpy()
        np.testing.assert_allclose(ours, spec.apply(images), atol=1e-6)


def test_lr_schedule_warmup_cosine_and_step():
    assert lr_factor(0, 100, 10, "cosine", [], 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine", [], 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", [], 0.1) == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "step", [0.5, 0.9], 0.1) == pytest.approx(0.01)
    with pytest.raises(TrainingError):
        lr_factor(50, 100, 0, "linear", [], 0.1)


_REFAULT_PROBE = """
import resource, sys, torch
from facekd.training.trainer import retain_freed_memory
if sys.argv[1] == "retain" and not retain_freed_memory():
    print("unsupported"); raise SystemExit
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)  # a 64 MB block, allocated and freed
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (64 << 20 >> 12))
"""


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    """A step's large blocks come back without page faults once freed memory is retained."""
    import subprocess
    import sys

    def blocks_faulted(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _REFAULT_PROBE, mode], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent.parent).stdout.strip()

    retained = blocks_faulted("retain")
    if retained == "unsupported":
        pytest.skip("not glibc: mallopt is unavailable")
    assert float(blocks_faulted("default")) >= 9  # each block is a fresh mmap: every page faults again
    assert float(retained) <= 3  # glibc settles its heap within the first blocks, then reuses them


def test_train_writes_student_config_and_metrics(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path)
    result = train_student(cfg, tmp_path / "run", progress=False)
    model, spec, state = load_student(result.student_path)
    assert spec == cfg.student.preprocess
    assert state["threshold"] == pytest.approx(result.metrics["val"]["threshold"])
    assert 0.0 <= result.metrics["val"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 128)
    with pytest.raises(TrainingError, match="--resume"):
        train_student(cfg, tmp_path / "run", progress=False)


def test_crash_mid_epoch_resumes_to_identical_weights(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.checkpoint_every_steps=1")
    reference = train_student(cfg, tmp_path / "straight", progress=False)

    real_step, calls = Trainer._step, {"n": 0}

    def crashing_step(self, indices, images=None):
        calls["n"] += 1
        if calls["n"] == 6:  # 24 images / (3 identities × 2) = 4 steps per epoch: mid second epoch
            raise RuntimeError("simulated kill")
        return real_step(self, indices, images)

    monkeypatch.setattr(Trainer, "_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_student(cfg, tmp_path / "crashed", progress=False)
    saved = load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)
    monkeypatch.setattr(Trainer, "_step", real_step)
    resumed = train_student(cfg, tmp_path / "crashed", resume=True, progress=False)

    want = load_checkpoint(reference.student_path)["model"]
    got = load_checkpoint(resumed.student_path)["model"]
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_resume_refuses_another_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1")
    train_student(cfg, tmp_path / "run", progress=False)
    other = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1", "optim.lr=0.5")
    with pytest.raises(TrainingError, match="another config"):
        train_student(other, tmp_path / "run", resume=True, progress=False)


def test_zero_weight_terms_are_not_built(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "loss.fcd=0", "loss.rad=0",
                      "loss.hard_fcd=0", "loss.exclusivity=0")
    folder = FaceFolder(cfg.data.aligned_root)
    trainer = Trainer(cfg, tmp_path / "run", ensure_teacher_cache(cfg, folder, False), folder, progress=False)
    assert set(trainer.suite.terms) == {"margin"}
    assert "queue" not in trainer.suite.needs
    batch = trainer._batch(list(range(6)))
    assert batch[2] is None and batch[3] is None  # neither teacher rows nor a queue are gathered


def test_ddp_two_gloo_processes(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    from facekd.config import save_config

    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1")
    save_config(cfg, cfg_path)
    ensure_teacher_cache(cfg, progress=False)  # built beforehand (tests/test_teacher_cache_parallel.py: by the ranks)
    run_torchrun("train", "--config", cfg_path, "--out", tmp_path / "ddp", timeout=240)
    state = load_checkpoint(tmp_path / "ddp" / "student.pt")
    assert state["epoch"] == 1
    # 24 images, batches of 6, two ranks: each rank took every other batch -> 2 steps each
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["global_step"] == 2


@pytest.fixture(scope="module")
def unlabelled_faces(tmp_path_factory) -> Path:
    """Faces without identity folders: a flat folder and a nested one."""
    import cv2

    root = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(7)
    for number in range(10):
        folder = root / ("nested/deeper" if number % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"face_{number}.jpg"), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    return root


def test_unlabelled_faces_join_batches_and_skip_the_margin_head(tiny_faces, tiny_teacher, tiny_pairs, tmp_path,
                                                                unlabelled_faces, monkeypatch):
    from facekd.core.data import UNLABELLED
    from facekd.training.losses.margin import CombinedMarginHead

    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, f"data.unlabelled=[{unlabelled_faces}]",
                      "data.unlabelled_per_batch=4", "train.epochs=1")
    folder = FaceFolder(cfg.data.aligned_root, unlabelled=cfg.data.unlabelled)
    assert len(folder) == 24 + 10 and (folder.labels == UNLABELLED).sum() == 10
    assert folder.path(30).is_file() and len(folder.classes) == 6
    cache = ensure_teacher_cache(cfg, folder, False)
    assert cache.embeddings.shape[0] == 34  # the teacher embeds the unlabelled faces too
    trainer = Trainer(cfg, tmp_path / "run", cache, folder, progress=False)
    batches = trainer._epoch_batches()
    assert all(len(b) == 6 + 4 and all(folder.labels[i] == UNLABELLED for i in b[6:]) for b in batches)
    assert all(folder.labels[i] != UNLABELLED for b in batches for i in b[:6])

    seen = []
    real_forward = CombinedMarginHead.forward
    monkeypatch.setattr(CombinedMarginHead, "forward",
                        lambda self, inputs: seen.append(inputs.labels.clone()) or real_forward(self, inputs))
    result = trainer.run()
    assert result.metrics["steps"] == len(batches) and seen
    assert all((labels == UNLABELLED).sum() == 4 for labels in seen)  # the head is given them, and skips them


def test_online_teacher_mode_trains_on_fresh_views(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "teacher.mode=online", "teacher.mixup=0.5",
                      "train.epochs=1")
    result = train_student(cfg, tmp_path / "run", progress=False)
    assert result.metrics["steps"] == 4 and 0.0 <= result.metrics["val"]["accuracy"] <= 1.0


def test_view_cache_training_end_to_end_and_cli_builds_it(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    from facekd.stages import ensure_view_cache

    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "teacher.views=3", "train.epochs=1")
    views = ensure_view_cache(cfg, progress=False)
    assert views.embeddings.shape == (24, 3, 16)
    assert ensure_view_cache(cfg, progress=False).cache_dir == views.cache_dir  # reused, not rebuilt
    result = train_student(cfg, tmp_path / "run", progress=False)
    assert result.metrics["steps"] == 4


def test_teacher_derived_student_trains_from_the_teacher(tiny_faces, tiny_pairs, tmp_path):
    from tests.test_derived import ChainTeacher, _export

    teacher = _export(ChainTeacher(rank1_head=True), tmp_path / "chain.onnx")
    cfg = tiny_config(tiny_faces, teacher, tiny_pairs, tmp_path, "student.family=teacher_derived",
                      "student.keep_ratio=0.5", "teacher.preprocess.mean=[0,0,0]", "teacher.preprocess.std=[1,1,1]",
                      "train.epochs=1")
    result = train_student(cfg, tmp_path / "run", progress=False)
    model, spec, state = load_student(result.student_path)
    assert state["arch"]["name"] == "teacher_derived" and spec == cfg.teacher.preprocess
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 16)


def test_cache_teacher_cli_builds_the_view_cache(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, capsys):
    from facekd.cli import main

    sets = [f"data.aligned_root={tiny_faces}", f"data.val_pairs={tiny_pairs}", f"teacher.path={tiny_teacher}",
            f"teacher.cache_dir={tmp_path / 'cache'}", "teacher.with_flip=false"]
    assert main(["--quiet", "cache-teacher", "--views", "2", *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out
    assert "teacher view cache ready" in out and "24 images × 2 views" in out
    assert (tmp_path / "cache" / "views" / "views.npy").is_file()


def test_feature_hints_train_a_derived_student_and_refuse_other_students(tiny_faces, tiny_pairs, tiny_teacher, tmp_path):
    from tests.test_derived import ChainTeacher, _export

    teacher = _export(ChainTeacher(rank1_head=True), tmp_path / "chain.onnx")
    cfg = tiny_config(tiny_faces, teacher, tiny_pairs, tmp_path, "student.family=teacher_derived",
                      "student.keep_ratio=0.5", "teacher.preprocess.mean=[0,0,0]", "teacher.preprocess.std=[1,1,1]",
                      "train.epochs=1", "loss.hint=1.0")
    folder = open_training_data(cfg)
    trainer = Trainer(cfg, tmp_path / "run", ensure_teacher_cache(cfg, folder, False), folder, progress=False)
    values = [trainer._step(batch) for batch in trainer._epoch_batches()[:3]]
    assert all(math.isfinite(v["hint"]) and v["hint"] > 0 for v in values)
    assert not any(name.startswith("hint_teacher") for name in trainer.net.state_dict())  # never saved with the run
    plain = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "loss.hint=1.0")
    with pytest.raises(TrainingError, match="loss.hint needs student.family=teacher_derived"):
        Trainer(plain, tmp_path / "run2", ensure_teacher_cache(plain, folder, False), folder, progress=False)


@pytest.mark.parametrize("views", [0, 2])
def test_a_teacher_cache_over_the_budget_is_read_in_place_to_the_same_weights(views, tiny_faces, tiny_teacher,
                                                                              tiny_pairs, tmp_path, monkeypatch):
    """Flips, the relation queue, class centres (logit_kd) and views read from the cache's memory maps
    when the embeddings exceed data.preload's budget, and train to the weights of the RAM copy."""
    import facekd.training.images
    from facekd.stages import ensure_view_cache

    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1", "train.max_steps_per_epoch=2",
                      "loss.logit_kd=1.0", f"teacher.views={views}", "data.loader_workers=0", "data.val_pairs=")
    folder = open_training_data(cfg)
    cache, view_cache = ensure_teacher_cache(cfg, folder, False), ensure_view_cache(cfg, folder, False)

    def trained(name: str):
        trainer = Trainer(cfg, tmp_path / name, cache, folder, progress=False, views=view_cache)
        rows = [r.array for r in (trainer.teacher, trainer.teacher_flipped, trainer.view_teacher) if r is not None]
        assert len(rows) == (3 if views else 2)
        return rows, load_checkpoint(trainer.run().student_path)["model"]

    copied, want = trained("copied")
    assert all(a.flags.owndata and not isinstance(a, np.memmap) for a in copied)
    monkeypatch.setattr(facekd.training.images, "PRELOAD_BUDGET_BYTES", 1024)  # below the cache's 3 kB (and the faces')
    mapped, got = trained("mapped")
    assert all(isinstance(a, np.memmap) and not a.flags.owndata for a in mapped)
    for name in want:
        assert torch.equal(got[name], want[name]), name

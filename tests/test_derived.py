"""The teacher-derived student: ONNX chain -> torch, low-rank GDC head, channel pruning, checkpoint
round trip and export parity."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from facekd.export.build import ExportConfig, export_checkpoint
from facekd.training.checkpoint import load_student, save_checkpoint, student_state
from facekd.training.models import build_student
from facekd.training.models.derived import ConversionError, convert_teacher, derive_student, prune_channels
from facekd.core.preprocess import PreprocessSpec
from facekd.training.teacher import OnnxTeacher

RAW = PreprocessSpec(mean=(0.0,) * 3, std=(1.0,) * 3)


class ChainTeacher(nn.Module):
    """SFace's shape in miniature: scaling, conv-BN-PReLU, depthwise + pointwise, BN, Gemm over C·7·7, BN."""

    def __init__(self, rank1_head: bool):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 4, 1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.PReLU(32),
            nn.Conv2d(32, 32, 3, 2, 1, groups=32, bias=False), nn.BatchNorm2d(32), nn.PReLU(32),
            nn.Conv2d(32, 48, 1, bias=False), nn.BatchNorm2d(48), nn.PReLU(48),
            nn.BatchNorm2d(48),
        )
        self.gemm = nn.Linear(48 * 49, 16)
        self.out_bn = nn.BatchNorm1d(16)
        for module in self.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
        if rank1_head:  # W[o, c, hw] = a[o, c] * g[c, hw]: the GDC head represents it exactly
            a, g = torch.randn(16, 48, 1), torch.randn(1, 48, 49)
            self.gemm.weight.data = (a * g).reshape(16, -1) * 0.05

    def forward(self, x):
        x = (x - 127.5) * 0.0078125
        return self.out_bn(self.gemm(self.body(x).flatten(1)))


def _export(module: nn.Module, path: Path) -> Path:
    torch.onnx.export(module.eval(), (torch.rand(1, 3, 112, 112) * 255,), str(path), input_names=["data"],
                      output_names=["fc1"], dynamic_axes={"data": {0: "n"}, "fc1": {0: "n"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def exact_teacher(tmp_path_factory) -> Path:
    return _export(ChainTeacher(rank1_head=True), tmp_path_factory.mktemp("teacher") / "chain.onnx")


@pytest.fixture(scope="module")
def faces_uint8(tiny_faces) -> np.ndarray:
    from facekd.core.data import FaceFolder

    folder = FaceFolder(tiny_faces)
    return np.stack([folder.load_rgb(i) for i in range(8)])


def _embed(student: nn.Module, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = student.eval()(torch.from_numpy(RAW.apply(faces)))
    return torch.nn.functional.normalize(out, dim=1).numpy()


def test_conversion_reproduces_the_teacher_when_its_head_is_rank_one(exact_teacher, faces_uint8):
    student, info = convert_teacher(exact_teacher)
    assert info["input_shift"] == pytest.approx(127.5) and info["input_scale"] == pytest.approx(0.0078125)
    teacher = OnnxTeacher(exact_teacher, RAW).embed(faces_uint8)
    np.testing.assert_allclose(_embed(student, faces_uint8), teacher, atol=2e-5)
    heads = [m for m in student.features if isinstance(m, nn.Conv2d)][-2:]
    assert heads[0].groups == heads[0].in_channels == 48 and heads[0].kernel_size == (7, 7)  # GDC
    assert heads[1].out_channels == 16


def test_conversion_of_a_full_rank_head_is_its_best_rank_one_fit(tmp_path, faces_uint8):
    path = _export(ChainTeacher(rank1_head=False), tmp_path / "full.onnx")
    student, _ = convert_teacher(path)
    teacher = OnnxTeacher(path, RAW).embed(faces_uint8)
    cosine = (_embed(student, faces_uint8) * teacher).sum(axis=1)
    assert 0.0 < cosine.min() < 0.9999  # an approximation, not the teacher itself


def test_a_higher_head_rank_fits_a_full_rank_head_closer_up_to_exactly(tmp_path, faces_uint8):
    path = _export(ChainTeacher(rank1_head=False), tmp_path / "full.onnx")
    teacher = OnnxTeacher(path, RAW).embed(faces_uint8)
    worst = {}
    for rank in (1, 4, 16):  # 16 = min(embedding 16, 7·7): the SVD keeps everything
        student, _ = convert_teacher(path, head_rank=rank)
        gdc = [m for m in student.features if isinstance(m, nn.Conv2d)][-2]
        assert (gdc.in_channels, gdc.out_channels, gdc.groups) == (48, 48 * rank, 48)
        worst[rank] = (_embed(student, faces_uint8) * teacher).sum(axis=1).min()
    assert worst[1] < worst[4] < 0.9999 < worst[16]
    with pytest.raises(ValueError, match="head rank"):
        convert_teacher(path, head_rank=17)


def test_a_widened_head_reads_the_channels_that_pruning_kept(tmp_path, faces_uint8):
    path = _export(ChainTeacher(rank1_head=False), tmp_path / "full.onnx")
    rank_one = derive_student(path, keep_ratio=0.5)
    full, info = convert_teacher(path)
    kept = prune_channels(full, 0.5)
    assert len(kept) == 24 and len(set(kept)) == 24 and kept.max() < 48
    from facekd.training.models.derived import _widen_head

    _widen_head(full, info["head_weight"][:, kept], info["head_bias"], 1)  # the same rank-1 fit, rebuilt
    np.testing.assert_allclose(_embed(full, faces_uint8), _embed(rank_one, faces_uint8), atol=1e-6)
    wide = derive_student(path, keep_ratio=0.5, head_rank=3)
    assert wide.arch.source["head_rank"] == 3
    gdc, embedding = [m for m in wide.features if isinstance(m, nn.Conv2d)][-2:]
    assert (gdc.in_channels, gdc.out_channels, gdc.groups, embedding.in_channels) == (24, 72, 24, 72)
    assert wide.hint_taps() == rank_one.hint_taps()
    with pytest.raises(ValueError, match="rank-1 head"):
        prune_channels(convert_teacher(path, head_rank=2)[0], 0.5)


def test_pruning_keeps_the_embedding_and_shrinks_every_hidden_layer(exact_teacher, faces_uint8):
    full, _ = convert_teacher(exact_teacher)
    pruned = derive_student(exact_teacher, keep_ratio=0.5, teacher_sha256="abc", importance="bn_scale")
    convs = [m for m in pruned.features if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == 16 and convs[0].in_channels == 3
    assert [c.out_channels for c in convs[:-1]] == [8, 8, 16, 16, 24, 24]
    assert sum(p.numel() for p in pruned.parameters()) < 0.45 * sum(p.numel() for p in full.parameters())
    assert _embed(pruned, faces_uint8).shape == (8, 16)
    # torch's exporter folded the BatchNorms into the convs: BN-scale importance falls back to l2
    assert pruned.arch.source == {"teacher_sha256": "abc", "keep_ratio": 0.5, "importance": "l2", "head_rank": 1}
    by_norm = derive_student(exact_teacher, keep_ratio=0.5, importance="l2")
    assert [c.out_channels for c in by_norm.features if isinstance(c, nn.Conv2d)][:-1] == [8, 8, 16, 16, 24, 24]
    with pytest.raises(ValueError, match="keep ratio"):
        prune_channels(full, 0.0)
    with pytest.raises(ValueError, match="importance"):
        prune_channels(full, 0.5, importance="random")


def test_pruned_student_round_trips_through_a_checkpoint(exact_teacher, faces_uint8, tmp_path):
    student = derive_student(exact_teacher, keep_ratio=0.5)
    path = save_checkpoint(tmp_path / "s.pt", student_state(student, RAW))
    loaded, spec, state = load_student(path)
    assert spec == RAW and state["arch"]["name"] == "teacher_derived"
    np.testing.assert_array_equal(_embed(loaded, faces_uint8), _embed(student, faces_uint8))
    assert asdict(build_student(asdict(student.arch)).arch) == asdict(student.arch)


def test_unsupported_teacher_ops_are_named(tmp_path):
    class WithPool(nn.Module):
        def forward(self, x):
            return nn.functional.max_pool2d(x, 2).flatten(1)[:, :8]

    path = _export(WithPool(), tmp_path / "pool.onnx")
    with pytest.raises(ConversionError, match="MaxPool"):
        convert_teacher(path)


@pytest.mark.parametrize("head_rank", [1, 3])
def test_pruned_student_exports_with_parity(exact_teacher, tiny_faces, tmp_path, head_rank):
    from facekd.core.pairs import VerificationPairs

    student = derive_student(exact_teacher, keep_ratio=0.5, head_rank=head_rank)
    checkpoint = save_checkpoint(tmp_path / "s.pt", student_state(student, RAW))
    faces = sorted(tiny_faces.glob("*/*.jpg"))
    pairs = VerificationPairs(faces, [0, 4, 8, 12], [1, 5, 9, 13], [True, False, True, False], folds=np.array([0, 0, 1, 1]), name="t")
    config = ExportConfig(formats=["torch", "onnx"], calib_count=4, parity_count=8, threads=1)
    records = export_checkpoint(checkpoint, tmp_path / "export", config, faces[:8], faces, pairs, progress=False)
    by_name = {f"{r.format}-{r.precision}": r for r in records}
    for name in ("torch-fp32", "onnx-fp32"):
        assert by_name[name].status == "ok", by_name[name]
        assert by_name[name].parity["worst_cos"] > 0.9999
    assert by_name["onnx-int8"].status in ("ok", "rejected")  # measured against the bar, either way
    assert by_name["onnx-int8"].parity["worst_cos"] > 0.9


def test_real_sface_converts_close_to_itself(facekd_home):
    from facekd.core.data import FaceFolder
    from facekd.core.preprocess import SFACE

    path = facekd_home / "models" / "sface" / "sface_fp32.onnx"
    student, _ = convert_teacher(path)
    assert sum(p.numel() for p in student.parameters()) < 0.4 * 9_667_074  # the 6.4 M-weight Gemm head is gone
    folder = FaceFolder(facekd_home / "data" / "lfw" / "aligned_112")
    faces = np.stack([folder.load_rgb(i) for i in range(0, 400, 25)])
    teacher = OnnxTeacher(path, SFACE).embed(faces)
    with torch.no_grad():
        mine = torch.nn.functional.normalize(student.eval()(torch.from_numpy(SFACE.apply(faces))), dim=1).numpy()
    assert (mine * teacher).sum(axis=1).mean() > 0.5  # rank-1 head: 0.61 measured; training closes the rest
    pruned = derive_student(path, keep_ratio=0.5, importance="bn_scale")
    assert pruned.arch.source["importance"] == "bn_scale"  # SFace keeps its BatchNorms: Network Slimming applies
    assert sum(p.numel() for p in pruned.parameters()) < 1_000_000


def _weight_only_int8(path: Path, out: Path) -> Path:
    """``path`` rewritten as weight-only int8 files are (OpenCV zoo ``*_int8bq``): each conv weight stored
    as int8 + per-channel scales, dequantised and reshaped in the graph, its float name left as an unused input
    (the Gemm stays float: int8 rounding would leave the rank-1 head that the GDC represents exactly)."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Conv"]:
        name = node.input[1]
        w = weights[name].reshape(len(weights[name]), -1)
        scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
        graph.initializer.extend([
            numpy_helper.from_array(np.round(w / scale[:, None]).astype(np.int8), f"{name}_q"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.asarray(weights[name].shape, np.int64), f"{name}_shape")])
        graph.node.insert(0, helper.make_node("Reshape", [f"{name}_dq", f"{name}_shape"], [f"{name}_r"]))
        graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale"], [f"{name}_dq"], axis=0))
        node.input[1] = f"{name}_r"
        graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(weights[name].shape)))
    kept = [t for t in graph.initializer if t.name not in {n.input[1].removesuffix("_r") for n in graph.node
                                                         if n.op_type == "Conv"}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(out))
    return out


def test_a_weight_only_int8_teacher_converts_to_the_float_network_it_computes(exact_teacher, faces_uint8, tmp_path):
    quantized = _weight_only_int8(exact_teacher, tmp_path / "chain_int8.onnx")
    student, _ = convert_teacher(quantized)
    teacher = OnnxTeacher(quantized, RAW).embed(faces_uint8)
    np.testing.assert_allclose(_embed(student, faces_uint8), teacher, atol=2e-5)
    float_student, _ = convert_teacher(exact_teacher)
    assert 0.99 < (_embed(float_student, faces_uint8) * teacher).sum(axis=1).min() < 1.0  # int8 weights differ


def test_the_fetched_int8bq_sface_derives_the_same_student_as_its_float_twin(facekd_home):
    from facekd.core.data import FaceFolder
    from facekd.core.preprocess import SFACE

    folder = FaceFolder(facekd_home / "data" / "lfw" / "aligned_112")
    faces = np.stack([folder.load_rgb(i) for i in range(0, 400, 50)])
    int8bq = facekd_home / "models" / "sface" / "sface_int8bq_original.onnx"
    student = derive_student(int8bq, keep_ratio=0.5, head_rank=8)
    assert sum(p.numel() for p in student.parameters()) < 2_000_000
    full, _ = convert_teacher(int8bq, head_rank=8)
    teacher = OnnxTeacher(int8bq, SFACE).embed(faces)
    with torch.no_grad():
        mine = torch.nn.functional.normalize(full.eval()(torch.from_numpy(SFACE.apply(faces))), dim=1).numpy()
    assert (mine * teacher).sum(axis=1).mean() > 0.9


def test_hint_taps_are_shared_by_the_teacher_and_its_pruned_student(exact_teacher):
    teacher, _ = convert_teacher(exact_teacher)
    student = derive_student(exact_teacher, keep_ratio=0.5)
    assert teacher.hint_taps() == student.hint_taps() and len(student.hint_taps()) >= 2
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        embedding, student_maps = student.eval().forward_with_taps(x, student.hint_taps())
        teacher_maps = teacher.eval().maps_at(x, teacher.hint_taps())
        assert torch.allclose(embedding, student(x))
    assert [m.shape[2:] for m in student_maps] == [m.shape[2:] for m in teacher_maps]
    assert all(s.shape[1] < t.shape[1] for s, t in zip(student_maps, teacher_maps))  # pruned channels

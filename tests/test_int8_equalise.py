"""Channel equalisation before INT8: the copy computes what the student computes, its activation
ranges are even where the next conv allows, int8 keeps it closer than the student itself, export
hands it to int8 converters only, and models that are not a chain are left alone with a reason.

The student is SFace's shape in miniature with a few activation channels 30× the others.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from facekd.export.build import INT8_SEARCH_MARGIN, ExportConfig, export_checkpoint
from facekd.export.equalise import _channel_ranges, equalise_for_int8
from facekd.export.onnx_format import _embed, export_fp32, quantize_int8
from facekd.export.parity import worst_cosine
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.training.models.derived import DerivedArch, DerivedStudent
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.export.parity import DEFAULT_BARS, ParityBar
from facekd.core.preprocess import STUDENT_DEFAULT

LOUD = 30.0


def _conv(cin, cout, kernel, stride=1, padding=0, groups=1, bias=False):
    return {"op": "conv", "cin": cin, "cout": cout, "kernel": kernel, "stride": stride, "padding": padding,
            "groups": groups, "bias": bias}


def _bn(channels):
    return {"op": "bn", "channels": channels, "eps": 1e-5}


def _prelu(channels):
    return {"op": "prelu", "channels": channels}


LAYERS = (
    {"op": "scale", "shift": 127.5, "scale": 1 / 128},
    _conv(3, 8, 3, 4, 1), _bn(8), _prelu(8),                   # 28x28
    _conv(8, 8, 3, 2, 1, groups=8), _bn(8), _prelu(8),         # depthwise, 14x14
    _conv(8, 16, 1), _bn(16), _prelu(16),
    _conv(16, 16, 3, 2, 1, groups=16), _bn(16), _prelu(16),    # depthwise, 7x7
    _bn(16),                                                   # after the activation: folds into the GDC
    _conv(16, 32, 7, groups=16),                               # GDC head, rank 2
    _conv(32, 12, 1, bias=True), _bn(12),
)
PAIRS = 5  # conv->dw, dw->1x1, 1x1->dw, dw->GDC (opened by the fold), GDC->1x1


@pytest.fixture(scope="module")
def student() -> DerivedStudent:
    torch.manual_seed(0)
    model = DerivedStudent(DerivedArch(embedding_size=12, layers=LAYERS))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        # BatchNorms after convs: two loud channels each, which the next conv reads 1/LOUD as strongly
        # (a large BatchNorm gain over small next weights: the float network is as before, its int8 is not)
        for norm, consumer, columns in ((2, 4, np.s_[:2]), (5, 7, np.s_[:, :2]), (8, 10, np.s_[:2]), (11, 14, np.s_[:4])):
            model.features[norm].weight[:2] *= LOUD
            model.features[norm].bias[:2] *= LOUD
            model.features[consumer].weight[columns] /= LOUD
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)


def test_the_equalised_copy_computes_what_the_student_computes(student, inputs):
    before = {k: v.clone() for k, v in student.state_dict().items()}
    equalised, facts = equalise_for_int8(student, inputs)
    batch = torch.from_numpy(inputs)
    with torch.no_grad():
        torch.testing.assert_close(equalised(batch), student(batch), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # the student is untouched
    assert facts["applied"] and facts["equalised_pairs"] == PAIRS and facts["folded_batchnorms"] == 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in equalised.features) == sum(isinstance(m, nn.BatchNorm2d) for m in student.features) - 1
    assert facts["worst_range_spread_after"] < facts["worst_range_spread_before"]


def test_ranges_before_a_depthwise_conv_become_equal(student, inputs):
    equalised, _ = equalise_for_int8(student, inputs)
    batch = torch.from_numpy(inputs)
    for model, even in ((student, False), (equalised, True)):
        ranges = _channel_ranges(model.features, batch)
        point = ranges[2]  # BatchNorm output the first depthwise conv reads
        assert bool(torch.allclose(point, point.max().expand_as(point), rtol=1e-4)) is even


def test_int8_keeps_the_equalised_copy_closer(student, inputs, tmp_path):
    equalised, _ = equalise_for_int8(student, inputs[:8])
    reference = student(torch.from_numpy(inputs)).detach().numpy()
    worst = {}
    for name, model in (("student", student), ("equalised", equalised)):
        fp32 = export_fp32(model, tmp_path / f"{name}.onnx", STUDENT_DEFAULT)
        int8 = quantize_int8(fp32, tmp_path / f"{name}-int8.onnx", inputs[:8], reduce_range=False, target_worst_cos=0.0)
        worst[name] = worst_cosine(_embed(int8, inputs, optimize=False), reference)
    assert 1 - worst["equalised"] < (1 - worst["student"]) / 10, worst  # measured: 0.99999 vs 0.99918


def test_models_that_are_not_a_chain_are_left_alone():
    model = MobileFaceNet(width=0.25).eval()
    same, facts = equalise_for_int8(model, np.zeros((2, 3, 112, 112), np.float32))
    assert same is model and not facts["applied"] and "MobileFaceNet" in facts["reason"]


@pytest.mark.parametrize("equalise", [True, False])
def test_export_hands_the_equalised_copy_to_int8_only(student, tiny_faces, tmp_path, equalise):
    checkpoint = save_checkpoint(tmp_path / "s.pt", student_state(student, STUDENT_DEFAULT, threshold=0.3))
    faces = sorted(tiny_faces.glob("*/*.jpg"))
    config = ExportConfig(formats=["onnx"], calib_count=4, parity_count=8, threads=1, golden=False, int8_equalise=equalise)
    records = {r.precision: r for r in export_checkpoint(checkpoint, tmp_path / "out", config, faces[:8], faces, None, progress=False)}
    details = {precision: json.loads((tmp_path / "out" / record.path).parent.joinpath("manifest.json").read_text())["details"]
               for precision, record in records.items()}
    assert records["fp32"].parity["worst_cos"] > 0.9999 and "int8_equalisation" not in details["fp32"]
    if equalise:
        assert details["int8"]["int8_equalisation"]["equalised_pairs"] == PAIRS
        assert details["int8"]["int8_equalisation"]["calibration_faces"] == 4
    else:
        assert "int8_equalisation" not in details["int8"]


@pytest.mark.parametrize("worst_case", [False, True])
def test_int8_layer_searches_follow_the_int8_bar(student, tiny_faces, tmp_path, worst_case, capfd):
    """A bar on the worst cosine makes the searches aim above it; a mean bar keeps every layer int8.
    An export without progress (``--quiet``) shows no search progress either."""
    checkpoint = save_checkpoint(tmp_path / "s.pt", student_state(student, STUDENT_DEFAULT, threshold=0.3))
    faces = sorted(tiny_faces.glob("*/*.jpg"))
    bars = {**DEFAULT_BARS, "int8": ParityBar(worst_cos=0.995, max_flip_rate=0.005) if worst_case else ParityBar(mean_cos=0.99)}
    config = ExportConfig(formats=["onnx-int8"], calib_count=4, parity_count=8, threads=1, golden=False, bars=bars)
    (record,) = export_checkpoint(checkpoint, tmp_path / "out", config, faces[:8], faces, None, progress=False)
    manifest = json.loads((tmp_path / "out" / record.path).parent.joinpath("manifest.json").read_text())
    search = manifest["details"]["int8_calibration"]
    assert "int8 sensitivity" not in capfd.readouterr().err
    if worst_case:
        assert search["target_worst_cos_on_calibration"] == pytest.approx(0.995 + INT8_SEARCH_MARGIN)
        assert "worst_cos_alone" in search or max(search["worst_cos_on_calibration_by_method"].values()) >= 0.998
    else:
        assert search["target_worst_cos_on_calibration"] is None and search["kept_float"] == []
        assert manifest["details"]["float_layers"] == []

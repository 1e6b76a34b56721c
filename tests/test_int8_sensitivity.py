"""INT8 by measurement: onnx int8 keeps its most sensitive layers float until the worst cosine
to fp32 on the calibration inputs reaches the target, and says which; or, allowed to, ships int8
weights only when static int8 misses the target and they meet it.

The network is tiny and made sensitive on purpose: the first convolution's channel 0 is scaled
by 10^4 (the second convolution divides it back), so in float nothing changes, while one
per-tensor int8 scale for that activation rounds the other seven channels to a few levels.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facekd.export.formats import FORMATS
from facekd.export.int8_search import WEIGHTS_ONLY
from facekd.export.onnx_format import (
    OnnxRuntimeRunner,
    _embed,
    _weighted_nodes,
    export_fp32,
    inspect,
    quantize_int8,
    worst_cosine,
)
from facekd.core.preprocess import STUDENT_DEFAULT

OUTLIER = 1e4


@pytest.fixture(scope="module")
def sensitive_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), *(nn.Conv2d(8, 8, 1) for _ in range(3)), nn.Conv2d(8, 16, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight[0] *= OUTLIER
        model[0].bias[0] *= OUTLIER
        model[1].weight[:, 0] /= OUTLIER
    fp32 = export_fp32(model, tmp_path_factory.mktemp("int8") / "fp32.onnx", STUDENT_DEFAULT)
    inputs = np.random.default_rng(0).uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)
    return fp32, inputs


def test_met_target_quantises_every_layer(sensitive_onnx, tmp_path):
    fp32, inputs = sensitive_onnx
    details = inspect(quantize_int8(fp32, tmp_path / "q.onnx", inputs, reduce_range=False, target_worst_cos=0.0)).details
    assert details["float_layers"] == []
    assert details["int8_calibration"]["kept_float"] == [] and "worst_cos_alone" not in details["int8_calibration"]  # no ranking when met


def test_missed_target_keeps_the_most_sensitive_layers_float(sensitive_onnx, tmp_path):
    fp32, inputs = sensitive_onnx
    reference = _embed(fp32, inputs)
    plain = quantize_int8(fp32, tmp_path / "plain.onnx", inputs, reduce_range=False, target_worst_cos=0.0)
    plain_worst = worst_cosine(_embed(plain, inputs, optimize=False), reference)
    assert plain_worst < 0.999  # the outlier channel costs full int8 its worst case

    tuned = quantize_int8(fp32, tmp_path / "tuned.onnx", inputs, reduce_range=False, target_worst_cos=0.999)
    details = inspect(tuned).details
    facts = details["int8_calibration"]
    alone = facts["worst_cos_alone"]
    assert sorted(alone) == sorted(_weighted_nodes(fp32))
    assert facts["kept_float"][0] == min(alone, key=alone.get)  # most sensitive first
    assert 1 <= len(facts["kept_float"]) <= len(alone) // 2
    assert set(facts["kept_float"]) <= {name for name, worst in alone.items() if worst < 0.9999}
    assert sorted(details["float_layers"]) == sorted(facts["kept_float"])  # read back from the graph itself
    worst = worst_cosine(_embed(tuned, inputs, optimize=False), reference)
    assert worst >= 0.999 > plain_worst
    assert worst == pytest.approx(facts["worst_cos_on_calibration"], abs=1e-6)


@pytest.fixture(scope="module")
def outlier_pixel_onnx(tmp_path_factory):
    """(fp32 ONNX, inputs) where an input pixel of 10^3 in every face sets the input's int8 scale so
    coarse that every other pixel rounds to zero: no static int8 holds that, int8 weights with float
    activations do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.PReLU(8), nn.Conv2d(8, 16, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    fp32 = export_fp32(model, tmp_path_factory.mktemp("outlier") / "fp32.onnx", STUDENT_DEFAULT)
    inputs = np.random.default_rng(0).uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)
    inputs[:, :, 0, 0] = 1e3
    return fp32, inputs


def test_missed_target_ships_int8_weights_only_when_they_meet_it(outlier_pixel_onnx, tmp_path):
    fp32, inputs = outlier_pixel_onnx
    reference = _embed(fp32, inputs)

    shipped = quantize_int8(fp32, tmp_path / "q.onnx", inputs, reduce_range=False, target_worst_cos=0.999,
                            weights_only_fallback=True)
    details = inspect(shipped).details
    facts = details["int8_calibration"]
    assert max(facts["worst_cos_on_calibration_by_method"].values()) < 0.999  # static int8 missed the target
    assert facts["activations"] == WEIGHTS_ONLY and "worst_cos_alone" not in facts  # no layer search after it
    assert facts["worst_cos_on_calibration"] == facts["worst_cos_on_calibration_fallback"] >= 0.999
    assert "QuantizeLinear" not in details["op_census"] and details["op_census"]["DequantizeLinear"] == 2
    assert details["initializer_types"]["int8"] == 2  # both weights stored as int8

    runner = OnnxRuntimeRunner()
    runner.load(shipped)
    assert "folded to float at load" in runner.info()["int8_weights"]
    folded = runner.run(inputs)
    assert worst_cosine(folded, reference) == pytest.approx(facts["worst_cos_on_calibration"], abs=1e-6)
    np.testing.assert_allclose(folded, _embed(shipped, inputs, optimize=False), rtol=1e-4, atol=1e-4)  # as written

    unfolded = quantize_int8(fp32, tmp_path / "static.onnx", inputs, reduce_range=False, target_worst_cos=0.0,
                             weights_only_fallback=True)  # target met: static int8, nothing to fall back from
    assert inspect(unfolded).details["int8_calibration"]["activations"] == "static"
    fp32_runner = OnnxRuntimeRunner()
    fp32_runner.load(fp32)
    assert "int8_weights" not in fp32_runner.info()


def test_weights_only_first_builds_no_static_int8_when_they_meet_the_target(outlier_pixel_onnx, tmp_path):
    fp32, inputs = outlier_pixel_onnx
    shipped = quantize_int8(fp32, tmp_path / "q.onnx", inputs, reduce_range=False, target_worst_cos=0.999,
                            weights_only_fallback=True, static_first=False)
    facts = inspect(shipped).details["int8_calibration"]
    assert facts["activations"] == WEIGHTS_ONLY and facts["worst_cos_on_calibration_fallback"] >= 0.999
    assert "worst_cos_on_calibration_before_search" not in facts and "worst_cos_on_calibration_by_method" not in facts
    assert sorted(path.name for path in tmp_path.iterdir()) == ["q.onnx"]  # nothing half-made left behind


def _openvino_static_and_shipped(fp32: Path, inputs: np.ndarray, out_dir: Path) -> dict:
    """In a spawned child (the export runs OpenVINO in its own process too: native runtimes crashed
    beside the others in one): NNCF int8 of ``fp32`` without and with the weights-only fallback, at
    most one of its two layers returned to float, saved, inspected and run on ``inputs``."""
    import openvino as ov

    from facekd.export import openvino_format

    openvino_format.MAX_FLOAT_ROUNDS = 1
    found = {}
    for name, fallback in (("static", False), ("shipped", True)):
        quantised = openvino_format._quantize(ov.convert_model(str(fp32)), inputs, 0.999, weights_only_fallback=fallback)
        ov.save_model(quantised, str(out_dir / name / "model.xml"), compress_to_fp16=False)
        runner = FORMATS["openvino"].runner()
        runner.load(out_dir / name, threads=1)
        found[name] = (openvino_format.inspect(out_dir / name).details, runner.run(inputs))
    return found


@pytest.mark.skipif(FORMATS["openvino"].unavailable_reason() is not None, reason=FORMATS["openvino"].unavailable_reason() or "")
def test_openvino_ships_int8_weights_only_when_static_misses_the_target(outlier_pixel_onnx, tmp_path):
    """The same faces through OpenVINO: NNCF static int8 misses the target, int8 weights with float
    activations meet it, and the IR says which it is."""
    fp32, inputs = outlier_pixel_onnx
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        found = child.submit(_openvino_static_and_shipped, fp32, inputs, tmp_path).result()
    (static_details, static_out), (details, shipped_out) = found["static"], found["shipped"]
    assert static_details["fake_quantize_nodes"] > 0
    assert "FakeQuantize" not in details["op_census"] and details["int8_weight_constants"] == 2
    assert details["int8_scheme"].startswith("NNCF int8 weights only") and "target 0.999" in details["int8_scheme"]
    reference = _embed(fp32, inputs)
    assert worst_cosine(static_out, reference) < 0.999 <= worst_cosine(shipped_out, reference)

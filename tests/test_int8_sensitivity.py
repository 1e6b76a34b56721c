"""INT8 by measurement: onnx int8 keeps its most sensitive layers float until the worst cosine
to fp32 on the calibration inputs reaches the target, and says which.

The network is tiny and made sensitive on purpose: the first convolution's channel 0 is scaled
by 10^4 (the second convolution divides it back), so in float nothing changes, while one
per-tensor int8 scale for that activation rounds the other seven channels to a few levels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from export.onnx_format import _embed, _weighted_nodes, export_fp32, inspect, quantize_int8, worst_cosine
from training.preprocess import STUDENT_DEFAULT

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
    assert "kept_float" not in details["int8_calibration"]  # no sensitivity run when the target is met


def test_missed_target_keeps_the_most_sensitive_layers_float(sensitive_onnx, tmp_path):
    fp32, inputs = sensitive_onnx
    reference = _embed(fp32, inputs)
    plain = quantize_int8(fp32, tmp_path / "plain.onnx", inputs, reduce_range=False, target_worst_cos=0.0)
    plain_worst = worst_cosine(_embed(plain, inputs, optimize=False), reference)
    assert plain_worst < 0.999  # the outlier channel costs full int8 its worst case

    tuned = quantize_int8(fp32, tmp_path / "tuned.onnx", inputs, reduce_range=False, target_worst_cos=0.999)
    details = inspect(tuned).details
    facts = details["int8_calibration"]
    alone = facts["sensitivity_worst_cos_alone"]
    assert sorted(alone) == sorted(_weighted_nodes(fp32))
    assert facts["kept_float"][0] == min(alone, key=alone.get)  # most sensitive first
    assert 1 <= len(facts["kept_float"]) <= len(alone) // 2
    assert set(facts["kept_float"]) <= {name for name, worst in alone.items() if worst < 0.9999}
    assert sorted(details["float_layers"]) == sorted(facts["kept_float"])  # read back from the graph itself
    worst = worst_cosine(_embed(tuned, inputs, optimize=False), reference)
    assert worst >= 0.999 > plain_worst
    assert worst == pytest.approx(facts["worst_cos_on_calibration"], abs=1e-6)

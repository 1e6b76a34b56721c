"""Quantisation-aware distillation: simulated int8 leaves the float model as it was, the fine-tune
moves the copy (not the original) towards the float embeddings under int8, and export hands
the copy to the int8 converters only, gating them against the original student.

The network is tiny and int8-sensitive on purpose (one activation channel 300× the others, so
one per-tensor int8 scale rounds the rest coarsely); faces are generated.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from facekd.export import build, formats
from facekd.export.build import ExportConfig, ExportError, export_checkpoint
from facekd.training.checkpoint import save_checkpoint, student_state
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.preprocess import STUDENT_DEFAULT
from facekd.training.quant_aware import QuantAwareConfig, SimulatedInt8, quant_aware_finetune

OUTLIER = 300.0


class TinyEmbedder(nn.Sequential):
    embedding_size = 16

    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with torch.no_grad():
            self[0].weight[0] *= OUTLIER
            self[0].bias[0] = abs(self[0].bias[0]) * OUTLIER
            self[2].weight[:, 0] /= OUTLIER


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(48)]


def _inputs(faces) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([STUDENT_DEFAULT.apply(face) for face in faces]))


def _worst_cos_to(model: nn.Module, reference: torch.Tensor, inputs: torch.Tensor) -> float:
    """Worst cosine of ``model`` under simulated int8 (ranges calibrated on ``inputs``) to ``reference``."""
    with torch.no_grad(), SimulatedInt8(model) as simulated:
        model(inputs)
        simulated.train_ranges(False)
        return float(nn.functional.cosine_similarity(model(inputs), reference).min())


def test_simulation_changes_outputs_and_leaves_the_float_model_as_it_was(faces):
    torch.manual_seed(0)
    model, inputs = TinyEmbedder().eval(), _inputs(faces[:8])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        floating = model(inputs)
        assert _worst_cos_to(model, floating, inputs) < 0.999  # int8 costs this net its worst case
        after = model(inputs)
    assert torch.equal(after, floating)  # no hook or parametrisation left behind
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


def test_fine_tune_moves_the_copy_towards_the_float_embeddings_under_int8(faces):
    torch.manual_seed(0)
    model, inputs = TinyEmbedder().eval(), _inputs(faces[32:])  # held-out faces
    original = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        reference = model(inputs)
    before = _worst_cos_to(model, reference, inputs)

    tuned, facts = quant_aware_finetune(model, faces[:32], STUDENT_DEFAULT, QuantAwareConfig(steps=40, batch_size=16, lr=3e-4))

    assert all(torch.equal(model.state_dict()[name], value) for name, value in original.items())  # original untouched
    assert any(not torch.equal(tuned.state_dict()[name], value) for name, value in original.items())
    assert not any(hasattr(layer, "parametrizations") for layer in tuned.modules())  # a plain float model again
    assert facts["steps"] == 40 and facts["faces"] == 32 and facts["loss_last_10"] < facts["loss_first"]
    assert _worst_cos_to(tuned, reference, inputs) > before


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", student_state(model, STUDENT_DEFAULT, threshold=0.3))


def test_export_hands_the_fine_tuned_copy_to_int8_only(checkpoint, tiny_faces, tmp_path, monkeypatch):
    images = sorted(tiny_faces.glob("*/*.jpg"))
    handed = {}

    def record_model(model, precision, *args, **kwargs):
        handed[precision] = model
        return original_convert(model, precision, *args, **kwargs)
    original_convert = formats.FORMATS["torch"].convert
    torch_int8 = replace(formats.FORMATS["torch"], convert=record_model,
                         precisions={**formats.FORMATS["torch"].precisions, "int8": "the fine-tuned copy, float"})
    monkeypatch.setattr(build, "FORMATS", {"torch": torch_int8})
    config = ExportConfig(formats=["torch"], precisions={"torch": ["fp32", "int8"]}, calib_count=4, parity_count=8,
                          threads=1, int8_finetune_steps=3, int8_finetune_faces=6, golden=False)

    with pytest.raises(ExportError, match="int8 fine-tune"):
        export_checkpoint(checkpoint, tmp_path / "none", config, images[:8], images, None, progress=False)

    records = {r.precision: r for r in export_checkpoint(checkpoint, tmp_path / "out", config, images[:8], images, None,
                                                         progress=False, finetune_images=images)}
    assert handed["int8"] is not handed["fp32"]
    assert any(not torch.equal(a, b) for a, b in zip(handed["int8"].state_dict().values(), handed["fp32"].state_dict().values()))
    assert records["fp32"].parity["worst_cos"] > 0.9999  # gated against the original student
    assert records["int8"].parity["worst_cos"] < records["fp32"].parity["worst_cos"]
    int8 = json.loads((tmp_path / "out" / records["int8"].path).parent.joinpath("manifest.json").read_text())
    fp32 = json.loads((tmp_path / "out" / "torch-fp32" / "manifest.json").read_text())
    assert int8["details"]["quant_aware_finetune"]["steps"] == 3 and int8["details"]["quant_aware_finetune"]["faces"] == 6
    assert "quant_aware_finetune" not in fp32["details"]

"""Simulated int8 and int8-aware training: the simulation leaves the float model as it was; the
PT2E fake-int8 student trains the student's own weights, in int8-aware epochs that write a
second student and resume inside themselves; export makes full-integer int8 of that student,
gated on its simulated-int8 twin.

The network of the simulation tests is tiny and int8-sensitive on purpose (one activation
channel 300× the others, so one per-tensor int8 scale rounds the rest coarsely); faces are generated.
"""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch
from torch import nn

from facekd.export import formats
from facekd.export.build import ExportConfig, export_checkpoint
from facekd.export.parity import DEFAULT_BARS, INT8_CONVERSION_BAR, ParityBar
from facekd.config import ConfigError
from facekd.stages import train_student
from facekd.training.checkpoint import INT8_STUDENT, load_checkpoint, save_checkpoint, student_state
from facekd.training.trainer import Trainer, TrainingError
from tests.test_trainer import tiny_config, tiny_pairs, tiny_teacher  # noqa: F401 (fixtures)
from facekd.training.models.derived import DerivedArch, DerivedStudent
from facekd.training.models.mobilefacenet import MobileFaceNet
from facekd.core.data import load_rgb_file
from facekd.core.errors import InputError
from facekd.core.preprocess import STUDENT_DEFAULT, PreprocessSpec
from facekd.training.quant_aware import FakeInt8Student, SimulatedInt8

RAW = PreprocessSpec(mean=(0.0,) * 3, std=(1.0,) * 3)

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


def _ranges(fake: FakeInt8Student) -> dict[str, torch.Tensor]:
    """The simulation's own state (activation ranges, scales): what its graph holds beyond the student's."""
    student = set(fake.float_student.state_dict())
    return {key: value.clone() for key, value in fake.graph.state_dict().items() if key not in student}


def test_the_fake_int8_student_trains_the_students_own_weights_and_freezes_ranges_in_eval(faces):
    torch.manual_seed(0)
    model, inputs = TinyEmbedder().eval(), _inputs(faces[:8])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fake = FakeInt8Student(model, inputs[:2]).train()
    with torch.no_grad():
        floating = model(inputs)
        assert float(nn.functional.cosine_similarity(fake(inputs), floating).min()) < 0.999  # int8 rounding shows
    ranges = _ranges(fake)
    assert ranges and all(key.startswith("activation_post_process_") for key in ranges)
    fake.eval()
    with torch.no_grad():
        fake(inputs * 3)  # validation-like inputs of another range
    assert all(torch.equal(_ranges(fake)[key], value) for key, value in ranges.items() if not key.endswith("_enabled"))

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    fake.train()
    loss = (fake(inputs) - floating).pow(2).sum()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(model.state_dict()[name], value) for name, value in before.items())
    twin = FakeInt8Student(model, inputs[:2]).eval()
    twin.load_state_dict(fake.state_dict())  # as a resumed run restores it
    with torch.no_grad():
        torch.testing.assert_close(twin(inputs), fake(inputs))  # weights shared, ranges carried


def test_int8_aware_epochs_write_both_students_and_resume_inside_them(tiny_faces, tiny_teacher, tiny_pairs, tmp_path,
                                                                      monkeypatch):
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1", "train.int8_aware_epochs=1",
                      "train.checkpoint_every_steps=1", "loss.exclusivity=0.1")
    straight = train_student(cfg, tmp_path / "straight", progress=False)
    float_state = load_checkpoint(tmp_path / "straight" / "student.pt")
    aware_state = load_checkpoint(tmp_path / "straight" / INT8_STUDENT)
    assert straight.student_path.name == "student.pt" and float_state["epoch"] == 1 and aware_state["epoch"] == 2
    assert aware_state["int8_aware"]["epochs"] == 1 and "int8_aware" not in float_state
    assert any(not torch.equal(aware_state["model"][k], v) for k, v in float_state["model"].items())
    assert straight.metrics["val"] == straight.metrics["history"][0]["val"]  # the float student's
    assert straight.metrics["int8_aware"]["val"] == straight.metrics["history"][1]["val"]

    real_step, calls = Trainer._step, {"n": 0}

    def crashing_step(self, indices, images=None):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 steps per epoch: inside the int8-aware epoch
            raise RuntimeError("simulated kill")
        return real_step(self, indices, images)

    monkeypatch.setattr(Trainer, "_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_student(cfg, tmp_path / "crashed", progress=False)
    monkeypatch.setattr(Trainer, "_step", real_step)
    train_student(cfg, tmp_path / "crashed", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "crashed" / INT8_STUDENT)["model"]
    for name, value in aware_state["model"].items():
        torch.testing.assert_close(resumed[name], value, msg=name)


def test_int8_aware_epochs_alone_start_from_a_trained_student(tiny_faces, tiny_teacher, tiny_pairs, tmp_path):
    with pytest.raises(ConfigError, match="init_from"):
        tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=0", "train.int8_aware_epochs=1")
    first = train_student(tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=1"),
                          tmp_path / "float", progress=False)
    cfg = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=0", "train.int8_aware_epochs=1",
                      f"train.init_from={first.student_path}")
    result = train_student(cfg, tmp_path / "aware", progress=False)
    started = load_checkpoint(result.student_path)
    for name, value in load_checkpoint(first.student_path)["model"].items():
        torch.testing.assert_close(started["model"][name], value, msg=name)
    assert started["metrics"]["val"] is not None  # measured before the int8-aware epoch
    assert (tmp_path / "aware" / INT8_STUDENT).is_file()
    other = tiny_config(tiny_faces, tiny_teacher, tiny_pairs, tmp_path, "train.epochs=0", "train.int8_aware_epochs=1",
                        f"train.init_from={first.student_path}", "student.width=0.5")
    with pytest.raises(TrainingError, match="another student"):
        train_student(other, tmp_path / "mismatch", progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MobileFaceNet(width=0.25).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    aware = MobileFaceNet(width=0.25).train()
    with torch.no_grad():  # BatchNorm statistics of a used network: a fresh one's embeddings round to zero in int8
        for _ in range(3):
            aware(torch.randn(16, 3, 112, 112))
    save_checkpoint(folder / INT8_STUDENT, student_state(aware.eval(), STUDENT_DEFAULT, threshold=0.3,
                                                         int8_aware={"epochs": 1, "quantizer": "test"}))
    return save_checkpoint(folder / "student.pt", student_state(model, STUDENT_DEFAULT, threshold=0.3))


@pytest.mark.skipif(formats.FORMATS["executorch"].unavailable_reason() is not None, reason="executorch is not installed")
def test_export_makes_full_integer_int8_of_the_int8_aware_student_gated_on_its_twin(checkpoint, tiny_faces, tmp_path):
    images = sorted(tiny_faces.glob("*/*.jpg"))
    bars = {**DEFAULT_BARS, INT8_CONVERSION_BAR: ParityBar(worst_cos=0.999)}  # no pairs here: no flip rate to bound
    config = ExportConfig(formats=["executorch"], calib_count=8, parity_count=8, threads=1, golden=False, bars=bars)
    records = {r.precision: r for r in export_checkpoint(checkpoint, tmp_path / "out", config, images[:8], images, None,
                                                         progress=False)}
    int8 = json.loads((tmp_path / "out" / "executorch-int8" / "manifest.json").read_text()) if records["int8"].status == "ok" \
        else json.loads((tmp_path / "out" / "rejected" / "executorch-int8" / "manifest.json").read_text())
    fp32 = json.loads((tmp_path / "out" / "executorch-fp32" / "manifest.json").read_text())
    record = int8["int8"]
    assert record["scheme"] == "static-full-integer" and record["float_layers"] == []
    assert record["int8_aware"] == {"epochs": 1, "quantizer": "test"}
    assert int8["details"]["int8_student"]["checkpoint"] == INT8_STUDENT
    assert record["conversion"]["worst_cos"] > 0.99  # the artifact computes what its twin simulates
    assert "against its simulated-int8 twin" in records["int8"].reason
    assert (records["int8"].status == "ok") == (record["conversion"]["worst_cos"] >= 0.999)
    assert int8["parity"]["worst_cos"] < 0.9  # measured against the float student, another network here
    assert records["int8"].status == "ok"
    assert fp32["int8"] is None and fp32["parity"]["worst_cos"] > 0.9999


@pytest.fixture(scope="module")
def shifted_checkpoint(tmp_path_factory):
    """A teacher-derived student whose graph starts with its input shift (y = (x − 127.5) / 128), and its
    int8-aware twin file: the shape of every SFace-derived student."""
    layers = ({"op": "scale", "shift": 127.5, "scale": 1 / 128},
              {"op": "conv", "cin": 3, "cout": 8, "kernel": 3, "stride": 2, "padding": 1, "groups": 1, "bias": False},
              {"op": "bn", "channels": 8, "eps": 1e-5}, {"op": "prelu", "channels": 8},
              {"op": "conv", "cin": 8, "cout": 8, "kernel": 56, "stride": 1, "padding": 0, "groups": 8, "bias": False},
              {"op": "conv", "cin": 8, "cout": 16, "kernel": 1, "stride": 1, "padding": 0, "groups": 1, "bias": True})
    torch.manual_seed(0)
    model = DerivedStudent(DerivedArch(embedding_size=16, layers=layers)).train()
    with torch.no_grad():
        for _ in range(3):
            model(255 * torch.rand(8, 3, 112, 112))
    folder = tmp_path_factory.mktemp("shifted")
    state = student_state(model.eval(), RAW, threshold=0.3)
    save_checkpoint(folder / INT8_STUDENT, {**state, "int8_aware": {"epochs": 1, "quantizer": "test"}})
    return save_checkpoint(folder / "student.pt", state)


@pytest.mark.skipif(formats.FORMATS["tflite"].unavailable_reason() is not None, reason="litert is not installed")
def test_tflite_int8_input_takes_int8_as_its_manifest_says(shifted_checkpoint, tiny_faces, tmp_path):
    images = sorted(tiny_faces.glob("*/*.jpg"))
    made = {}
    for int8_input in (False, True):
        config = ExportConfig(formats=["tflite-int8"], calib_count=8, parity_count=8, threads=1, golden=False,
                              int8_input=int8_input)
        export_checkpoint(shifted_checkpoint, tmp_path / str(int8_input), config, images[:8], images, None, progress=False)
        folder = next(tmp_path.glob(f"{int8_input}/**/tflite-int8"))  # gated on the twin: under rejected/ when it misses
        runner = formats.FORMATS["tflite"].runner()
        runner.load(folder / "model.tflite", threads=1)
        made[int8_input] = (json.loads((folder / "manifest.json").read_text()), runner)
    (float_in, float_runner), (int8_in, int8_runner) = made[False], made[True]
    assert float_in["input"]["dtype"] == "float32" and "quantization" not in float_in["input"]
    quantization = int8_in["input"]["quantization"]
    assert int8_in["input"]["dtype"] == "int8" and quantization["shift"] == 127.5 and quantization["scale"] > 0
    assert int8_in["int8"]["scheme"] == "static-full-integer" and int8_in["output"]["dtype"] == "int8"
    faces = RAW.with_layout("NHWC").apply(np.stack([load_rgb_file(path) for path in images[:4]]))
    a, b = float_runner.run(faces), int8_runner.run(faces)  # one graph, its input quantised outside it instead of inside
    cosines = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() > 0.999


def test_int8_input_needs_an_int8_aware_student(tmp_path, tiny_faces):
    torch.manual_seed(0)
    plain = save_checkpoint(tmp_path / "student.pt", student_state(MobileFaceNet(width=0.25).eval(), STUDENT_DEFAULT,
                                                                    threshold=0.3))
    images = sorted(tiny_faces.glob("*/*.jpg"))
    config = ExportConfig(formats=["tflite-int8"], calib_count=4, parity_count=4, threads=1, golden=False, int8_input=True)
    with pytest.raises(InputError, match="int8_input needs a full-integer int8"):
        export_checkpoint(plain, tmp_path / "out", config, images[:4], images, None, progress=False)

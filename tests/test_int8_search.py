"""The int8 search every converter shares (export.int8_search.choose_int8) with a PT2E converter's
choices, and ExecuTorch's use of it.

The search is driven here by a fake converter: an "artifact" is the list of convolutions kept
float, and its embeddings are the float model's plus noise that only keeping chosen
convolutions float removes, so every count the search tries has a known worst cosine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facekd.export.faces import FaceSet
from facekd.export.formats import FORMATS
from facekd.export.int8 import Int8Plan
from facekd.export.int8_search import choose_int8, float_run, pt2e_choices
from facekd.export.parity import worst_cosine
from facekd.core.preprocess import STUDENT_DEFAULT
from tests.test_tflite_int8_search import OUTLIER, Tiny


@pytest.fixture(scope="module")
def faces() -> FaceSet:
    images = np.random.default_rng(0).integers(0, 256, (12, 112, 112, 3), dtype=np.uint8)
    return FaceSet(tuple(f"face{i}" for i in range(len(images))), tuple(images))


def _fake_converter(model, batch, noisy: dict[str, float]):
    """(build, embed, built): each convolution in ``noisy`` left int8 adds noise of that size."""
    reference, order = float_run(model, batch)
    built = []

    def build(positions):
        built.append([order[i] for i in positions])
        return built[-1]

    def embed(kept):
        noise = sum(size for name, size in noisy.items() if name not in kept)
        return reference + noise * np.random.default_rng(len(kept)).standard_normal(reference.shape)

    return build, embed, built


def _search(model, batch, target, build, embed, boundary_float=False, dynamic_range=lambda: None):
    return choose_int8(pt2e_choices(model, batch, build, embed, boundary_float, dynamic_range), target)


def test_the_search_doubles_the_float_count_up_to_half_and_stops_at_the_target(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    artifact, facts = _search(model, batch, 0.998, build, embed)
    # conv "1" reads the outlier channel: ranked first by simulated int8, kept float at count 1, target met
    assert built == [[], ["1"]] and artifact == ["1"] and facts["kept_float"] == ["1"]
    assert facts["worst_cos_on_calibration_before_search"] < 0.998 <= facts["worst_cos_on_calibration"]


def test_when_no_count_meets_the_target_the_best_measured_artifact_is_kept(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3, "4": 5.0})  # "4" ranks low: never kept float
    artifact, facts = _search(model, batch, 1.0, build, embed, boundary_float=True)
    assert [len(kept) for kept in built[:2]] == [0, 1]  # 3 inner convolutions ("0" and "4" are the converter's): cap 1
    assert "0" not in built[1] and "4" not in built[1]
    counts = facts["worst_cos_by_float_count"]
    best = max([facts["worst_cos_on_calibration_before_search"], *counts.values()])
    assert facts["worst_cos_on_calibration"] == best and artifact == facts["kept_float"]
    assert facts["boundary_float"] == ["0", "4"]  # the converter's own float convolutions, recorded


def test_without_a_target_there_is_no_search(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    _, facts = _search(model, batch, None, build, embed)
    assert built == [[]] and facts["kept_float"] == [] and "worst_cos_alone" not in facts


def test_a_dynamic_range_int8_that_meets_the_target_ships_without_a_search(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    dynamic = ["1", "dynamic"]  # the fake's way to say: conv "1" carries no int8 noise in this artifact
    artifact, facts = _search(model, batch, 0.998, build, embed, boundary_float=True,
                                           dynamic_range=lambda: dynamic)  # as tflite-int8 asks
    assert artifact is dynamic and built == [[]] and "worst_cos_alone" not in facts
    assert facts["activations"] == "dynamic" and facts["kept_float"] == [] == facts["boundary_float"]  # the static boundary does not apply
    assert facts["worst_cos_on_calibration_before_search"] < 0.998 <= facts["worst_cos_on_calibration_fallback"]


def test_a_dynamic_range_int8_that_misses_the_target_leaves_the_search_to_run(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    artifact, facts = _search(model, batch, 0.998, build, embed, dynamic_range=lambda: ["dynamic"])
    assert built == [[], ["1"]] and artifact == ["1"] and facts["activations"] == "static"
    assert facts["worst_cos_on_calibration_fallback"] < 0.998 <= facts["worst_cos_on_calibration"]
    _, without = _search(model, batch, 0.998, build, embed, dynamic_range=lambda: None)
    assert "worst_cos_on_calibration_fallback" not in without and without["kept_float"] == ["1"]


def test_without_static_first_a_fallback_that_meets_the_target_ships_and_no_static_int8_is_made(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    dynamic = ["1", "dynamic"]
    artifact, facts = choose_int8(pt2e_choices(model, batch, build, embed, True, lambda: dynamic), 0.998, static_first=False)
    assert artifact is dynamic and built == [] and facts["activations"] == "dynamic"
    assert "worst_cos_on_calibration_before_search" not in facts and facts["worst_cos_on_calibration_fallback"] >= 0.998


def test_without_static_first_a_fallback_that_misses_leaves_static_int8_and_the_search_to_run(faces):
    model = Tiny(OUTLIER)
    batch = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    build, embed, built = _fake_converter(model, batch, {"1": 0.3})
    artifact, facts = choose_int8(pt2e_choices(model, batch, build, embed, False, lambda: ["dynamic"]), 0.998,
                                  static_first=False)
    assert built == [[], ["1"]] and artifact == ["1"] and facts["activations"] == "static"
    assert facts["worst_cos_on_calibration_fallback"] < 0.998 <= facts["worst_cos_on_calibration"]


@pytest.mark.skipif(FORMATS["executorch"].unavailable_reason() is not None,
                    reason=FORMATS["executorch"].unavailable_reason() or "")
def test_executorch_int8_searches_and_its_program_is_the_one_measured(faces, tmp_path):
    from facekd.export import executorch_format

    model = Tiny(OUTLIER)
    path = tmp_path / "model.pte"
    executorch_format.convert(model, "int8", faces, path, preprocess=STUDENT_DEFAULT, max_batch=1, int8=Int8Plan(search_target=1.0))
    search = executorch_format.inspect(path).details["int8_calibration"]
    assert len(search["worst_cos_by_float_count"]) == 2  # 5 convolutions: 1, then 2 (half) kept float
    assert set(search["kept_float"]) <= set(search["worst_cos_alone"])
    runner = executorch_format.ExecuTorchRunner()
    runner.load(path, threads=1)
    inputs = faces.inputs(STUDENT_DEFAULT.with_layout("NCHW"))
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    assert worst_cosine(runner.run(inputs), reference) == pytest.approx(search["worst_cos_on_calibration"], abs=1e-4)


@pytest.mark.skipif(FORMATS["executorch"].unavailable_reason() is not None,
                    reason=FORMATS["executorch"].unavailable_reason() or "")
def test_executorch_dynamic_range_int8_quantises_the_large_layers_and_runs(faces):
    from facekd.export import executorch_format

    example = (torch.zeros(STUDENT_DEFAULT.with_layout("NCHW").input_shape(1)),)
    assert executorch_format._dynamic_range_program(Tiny(1.0), example) is None  # no layer with 1024 weights
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(3, 64, 3, stride=4), nn.PReLU(64), nn.Conv2d(64, 64, 1), nn.Conv2d(64, 64, 1),
                         nn.PReLU(64), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with torch.no_grad():
        wide[4].weight.fill_(1.5)  # a slope above 1: no maximum form, the clamp form instead
    method = executorch_format._method(executorch_format._dynamic_range_program(wide, example))
    inputs = torch.from_numpy(faces.inputs(STUDENT_DEFAULT.with_layout("NCHW")))
    embeddings = np.concatenate([method.execute([inputs[i : i + 1]])[0].numpy() for i in range(len(inputs))])
    with torch.no_grad():
        reference = wide(inputs).numpy()
    assert 0.99 < worst_cosine(embeddings, reference) < 1.0  # int8 arithmetic: close to float, not equal

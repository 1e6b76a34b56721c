"""The int8 search every int8 converter shares (``choose_int8``): what ships when the export gives a
worst-cosine target on the calibration faces (``Int8Plan.search_target``; None: static int8 as made).

1. static int8, every layer the converter quantises int8;
2. if that misses the target: the converter's fallback — dynamic-range int8 (TFLite, ExecuTorch:
   activations quantised per inference from their own range, so no face is clipped by ranges
   calibrated on others) or int8 weights only (ONNX, OpenVINO: activations float) — when it meets it.
   For a student whose static int8 is known to miss (``Int8Plan.static_first`` off,
   ``export.int8_static_first``) the fallback comes first, and static int8 only when it misses;
3. else layers kept float, most sensitive first: each candidate ranked once by the worst cosine
   with only it int8, then 1, 2, 4, … of them (at most half) kept float, each count built and
   measured, until the target is met; when none meets it, the best one measured ships. A converter
   with a search of its own (OpenVINO: NNCF's accuracy control) runs that instead.

A converter says what it can make through ``Int8Choices``; the facts (the manifest's
``details.int8_calibration``) have the same keys for every format: ``activations`` (static |
dynamic | ``WEIGHTS_ONLY``), ``target_worst_cos_on_calibration``, ``worst_cos_on_calibration`` (of what ships),
``kept_float``, ``boundary_float`` (layers the converter keeps float itself), and, where tried,
``worst_cos_on_calibration_before_search`` (static int8 of every layer), ``worst_cos_on_calibration_fallback``,
``worst_cos_alone``, ``worst_cos_by_float_count``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generic, Sequence, TypeVar

import numpy as np

from .parity import worst_cosine

if TYPE_CHECKING:
    import torch
    from torch import nn

Artifact = TypeVar("Artifact")
WEIGHTS_ONLY = "float (int8 weights only)"  # facts' activations of a weights-only fallback


@dataclass
class Int8Choices(Generic[Artifact]):
    """What one converter can make. ``build(kept)``: static int8 with the layers named ``kept``
    float; ``worst(artifact)``: its worst cosine to float on the calibration faces; ``layers()``:
    the layers the search may keep float, in execution order; ``alone(layers)``: {layer: worst
    cosine with only it int8}; ``fallback()``: the dynamic-range or weights-only int8
    (``fallback_activations`` says which; None: nothing to quantise); ``search(target)``: the
    converter's own search instead of the ranking, returning (artifact, kept float, its worst)."""

    build: Callable[[Sequence[str]], Artifact]
    worst: Callable[[Artifact], float]
    layers: Callable[[], list[str]] | None = None
    alone: Callable[[list[str]], dict[str, float]] | None = None
    fallback: Callable[[], Artifact | None] | None = None
    fallback_activations: str = "dynamic"
    search: Callable[[float], tuple[Artifact, list[str], float]] | None = None
    boundary_float: list[str] = field(default_factory=list)


def choose_int8(choices: Int8Choices[Artifact], target: float | None, facts: dict | None = None, *,
                static_first: bool = True) -> tuple[Artifact, dict]:
    """(the int8 artifact that ships, what was measured): the three steps of the module docstring;
    without ``static_first``, the fallback is tried before static int8 (and static only when it misses)."""
    facts = {**(facts or {}), "activations": "static", "target_worst_cos_on_calibration": target, "kept_float": [],
             "boundary_float": list(choices.boundary_float)}
    if target is not None and not static_first and (fallback := _fallback_meeting(choices, target, facts)) is not None:
        return fallback, facts
    artifact = choices.build([])
    worst = choices.worst(artifact)
    facts.update(worst_cos_on_calibration_before_search=worst, worst_cos_on_calibration=worst)
    if target is None or worst >= target:
        return artifact, facts
    if static_first and (fallback := _fallback_meeting(choices, target, facts)) is not None:
        return fallback, facts
    if choices.search is not None:
        artifact, kept, worst = choices.search(target)
        facts.update(kept_float=kept, worst_cos_on_calibration=worst)
        return artifact, facts
    return _keep_sensitive_float(choices, target, (worst, [], artifact), facts)


def _fallback_meeting(choices: Int8Choices[Artifact], target: float, facts: dict) -> Artifact | None:
    """The converter's fallback when it meets ``target`` (its worst cosine recorded in ``facts`` either way)."""
    fallback = None if choices.fallback is None else choices.fallback()
    if fallback is None:
        return None
    facts["worst_cos_on_calibration_fallback"] = fallback_worst = choices.worst(fallback)
    if fallback_worst < target:
        return None
    facts.update(activations=choices.fallback_activations, worst_cos_on_calibration=fallback_worst, boundary_float=[])
    return fallback


def _keep_sensitive_float(choices: Int8Choices[Artifact], target: float, static: tuple, facts: dict) -> tuple[Artifact, dict]:
    candidates = [name for name in choices.layers() if name not in choices.boundary_float]
    alone = choices.alone(candidates)
    ranked, cap = sorted(candidates, key=alone.get), len(candidates) // 2
    best, tried = static, {}
    for count in sorted({min(1 << doubling, cap) for doubling in range(cap.bit_length() + 1)} - {0}):
        kept = ranked[:count]
        candidate = choices.build(kept)
        tried[count] = choices.worst(candidate)
        if tried[count] > best[0]:
            best = (tried[count], kept, candidate)
        if best[0] >= target:
            break
    facts.update(kept_float=best[1], worst_cos_on_calibration=best[0], worst_cos_by_float_count=tried,
                 worst_cos_alone=alone)
    return best[2], facts


def float_run(model: "nn.Module", batch: "torch.Tensor") -> tuple[np.ndarray, list[str]]:
    """(``model``'s float embeddings of ``batch``, names of its Conv2d layers in the order the forward runs them)."""
    import torch
    from torch import nn

    names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    order: list[str] = []
    hooks = [conv.register_forward_pre_hook(lambda module, _: order.append(names[module])) for conv in names]
    try:
        with torch.no_grad():
            return model.eval()(batch).numpy(), order
    finally:
        for hook in hooks:
            hook.remove()


def pt2e_choices(model: "nn.Module", batch: "torch.Tensor", build: Callable[[Sequence[int]], Artifact],
                 embed: Callable[[Artifact], np.ndarray], boundary_float: bool,
                 fallback: Callable[[], Artifact | None]) -> Int8Choices[Artifact]:
    """The choices of a PT2E converter (TFLite, ExecuTorch): ``build(positions)`` quantises with the
    convolutions at those execution-order positions float; layers are ranked by simulated int8
    (``training.quant_aware.SimulatedInt8``: a conversion per layer would cost seconds each);
    ``boundary_float``: the converter keeps the first and last convolution float itself."""
    reference, order = float_run(model, batch)
    return Int8Choices(
        build=lambda kept: build(sorted(order.index(name) for name in kept)),
        worst=lambda artifact: worst_cosine(embed(artifact), reference),
        layers=lambda: order, alone=lambda layers: simulated_sensitivity(model, batch, reference, layers),
        fallback=fallback, fallback_activations="dynamic",
        boundary_float=[order[0], order[-1]] if boundary_float else [])


def simulated_sensitivity(model: "nn.Module", batch: "torch.Tensor", reference: np.ndarray,
                          order: Sequence[str]) -> dict[str, float]:
    """{conv name: worst cosine to ``reference`` with only that conv in simulated int8}, in ``order``."""
    import torch

    from facekd.training.quant_aware import SimulatedInt8

    by_name = dict(model.named_modules())
    alone = {}
    for name in order:
        with SimulatedInt8(model, layers=[by_name[name]]), torch.no_grad():
            alone[name] = worst_cosine(model(batch).numpy(), reference)
    return alone

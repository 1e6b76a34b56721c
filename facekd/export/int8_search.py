"""INT8 by measurement for the PT2E converters (TFLite, ExecuTorch): when the export gives a
worst-cosine target and the all-int8 artifact misses it on the calibration faces, convolutions
stay float, most sensitive first, until it is met.

A conversion costs seconds, so the convolutions are ranked once by the worst cosine to the float
model with only that one in simulated int8 (``facekd.training.quant_aware.SimulatedInt8``), and 1, 2, 4, …
of them (at most half of those the converter may quantise) are kept float, each count built and
measured, until the target is met; when no count meets it, the best one measured is kept.
A converter with a dynamic-range int8 (activations quantised per inference from their own range,
so no face is clipped by ranges calibrated on other faces) offers it first: when it meets the
target it ships instead of a search whose float convolutions cost the speed int8 was for.
Returns the artifact and what was measured (manifest ``details.int8_calibration``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np

from .parity import worst_cosine

if TYPE_CHECKING:
    import torch
    from torch import nn

Artifact = TypeVar("Artifact")


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


def keep_sensitive_float(model: "nn.Module", batch: "torch.Tensor", target: float | None,
                         build: Callable[[list[str], list[str]], Artifact], embed: Callable[[Artifact], np.ndarray],
                         boundary_float: bool = False,
                         dynamic_range: Callable[[], Artifact | None] | None = None) -> tuple[Artifact, dict]:
    """(artifact, facts). ``build(kept, order)`` converts with the convolutions named ``kept``
    float (``order``: every convolution's name in execution order), ``embed(artifact)`` runs it on
    the calibration faces that ``batch`` holds for the float model. ``boundary_float``: the
    converter keeps the first and last convolution float itself, the search picks among the
    others. ``dynamic_range()``: the converter's dynamic-range int8 (None: it has nothing to
    quantise), tried before the search.
    ``target`` None: no search."""
    reference, order = float_run(model, batch)
    artifact = build([], order)
    worst = worst_cosine(embed(artifact), reference)
    facts = {"calibration_faces": len(batch), "activations": "static", "worst_cos_on_calibration_before_search": worst,
             "target_worst_cos_on_calibration": target, "kept_float": [], "worst_cos_on_calibration": worst,
             "boundary_float": [order[0], order[-1]] if boundary_float else []}
    if target is None or worst >= target:
        return artifact, facts
    dynamic = None if dynamic_range is None else dynamic_range()
    if dynamic is not None:
        facts["worst_cos_on_calibration_dynamic_range"] = dynamic_worst = worst_cosine(embed(dynamic), reference)
        if dynamic_worst >= target:
            facts.update(activations="dynamic", worst_cos_on_calibration=dynamic_worst, boundary_float=[])
            return dynamic, facts
    alone = simulated_sensitivity(model, batch, reference, order)
    inner = order[1:-1] if boundary_float else order
    ranked, cap = sorted(inner, key=alone.get), len(inner) // 2
    best, tried = (worst, [], artifact), {}
    for count in sorted({min(1 << doubling, cap) for doubling in range(cap.bit_length() + 1)} - {0}):
        kept = ranked[:count]
        candidate = build(kept, order)
        tried[count] = worst_cosine(embed(candidate), reference)
        if tried[count] > best[0]:
            best = (tried[count], kept, candidate)
        if best[0] >= target:
            break
    facts.update(kept_float=best[1], worst_cos_on_calibration=best[0], worst_cos_by_float_count=tried,
                 simulated_worst_cos_alone=alone)
    return best[2], facts

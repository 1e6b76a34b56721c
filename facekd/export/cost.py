"""Parameters and multiply-accumulates of a model, counted the same way for a torch student and
an ONNX teacher, so "× fewer parameters" and achieved GMAC/s compare like with like.

MACs per image: a convolution adds ``H_out · W_out · C_out · (C_in / groups) · k_h · k_w``, a fully
connected layer (Linear / Gemm / MatMul) ``in · out``; normalisation and activations are not counted.
Parameters: every weight and bias (ONNX: every float initializer).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


def torch_cost(model: "nn.Module", size: int = 112) -> dict:
    """{"params", "macs"} of ``model`` for one ``size``×``size`` RGB image (forward hooks)."""
    import torch

    macs = [0]

    def conv(module, _inputs, output):
        kh, kw = module.kernel_size
        macs[0] += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module, _inputs, output):
        macs[0] += module.in_features * module.out_features * (output[0].numel() // module.out_features)

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return {"params": int(sum(p.numel() for p in model.parameters())), "macs": int(macs[0])}


def onnx_cost(path: str | Path) -> dict:
    """{"params", "macs"} of an ONNX model for one image (shapes from onnx shape inference, batch 1)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    if dims and not dims[0].dim_value:
        dims[0].ClearField("dim_param")
        dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    params = int(sum(a.size for a in initializers.values() if np.issubdtype(a.dtype, np.floating)))
    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv" and node.input[1] in initializers:
            weight = initializers[node.input[1]]  # [C_out, C_in/groups, kh, kw]
            out = shapes.get(node.output[0]) or []
            if len(out) == 4 and all(out[1:]):
                macs += int(np.prod(out[1:])) * int(np.prod(weight.shape[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            weight = initializers.get(node.input[1])
            if weight is not None and weight.ndim == 2:
                macs += int(weight.size)
    return {"params": params, "macs": int(macs)}

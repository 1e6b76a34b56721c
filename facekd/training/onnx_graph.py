"""ONNX graphs made plain for the readers here: unused inputs dropped, constant weight
dequantisation folded into float.

Files like OpenCV zoo's ``*_int8bq.onnx`` keep each weight as int8 blocks plus scales and dequantise
it in the graph (``DequantizeLinear``, blockwise since opset 21, often followed by a ``Reshape``),
and list the original float weight names as unused graph inputs. Folding computes those constant
subgraphs once, so every reader sees the float network the runtime computes:
``w = (q − zero_point) · scale``, with scale and zero point repeated over each block along ``axis``.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def dequantize(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> np.ndarray:
    """The float tensor a DequantizeLinear node with constant inputs computes (per-tensor, per-axis, blockwise)."""
    attributes = _attributes(node)
    quantized = values[node.input[0]].astype(np.float32)
    scale = values[node.input[1]].astype(np.float32)
    has_zero = len(node.input) > 2 and node.input[2]
    zero = values[node.input[2]].astype(np.float32) if has_zero else np.zeros_like(scale)
    if scale.ndim:
        axis = attributes.get("axis", 1) % quantized.ndim
        block = attributes.get("block_size", 0)
        if block:
            scale = np.repeat(scale, block, axis=axis).take(range(quantized.shape[axis]), axis=axis)
            zero = np.repeat(zero, block, axis=axis).take(range(quantized.shape[axis]), axis=axis)
        else:
            shape = [1] * quantized.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((quantized - zero) * scale).astype(np.float32)


def _fold(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """The constant a weight-path node computes, or None when it is not one this module folds."""
    if not node.input or not all(name in values for name in node.input if name):
        return None
    if node.op_type == "DequantizeLinear":
        return dequantize(node, values)
    if node.op_type == "Reshape":
        return values[node.input[0]].reshape(values[node.input[1]].astype(np.int64))
    if node.op_type == "Identity":
        return values[node.input[0]]
    return None


def names_used(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read by a node of ``graph`` or of its sub-graphs (If/Loop bodies), and its outputs."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs)
            if attribute.HasField("g"):
                subgraphs.append(attribute.g)
            for subgraph in subgraphs:
                used |= names_used(subgraph)
    used.update(output.name for output in graph.output)
    return used


def clean_graph(model: onnx.ModelProto) -> None:
    """Drop graph inputs that are initializers or unused by any node, and unused initializers, in place.

    Old exporters list every weight as a graph input; onnxruntime would then keep them variable
    (no constant folding) and demand values for the unused ones.
    """
    initializers = {init.name for init in model.graph.initializer}
    used = names_used(model.graph)
    keep_inputs = [item for item in model.graph.input if item.name not in initializers and item.name in used]
    keep_initializers = [init for init in model.graph.initializer if init.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep_inputs)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_initializers)


def fold_dequantized_weights(model: onnx.ModelProto) -> int:
    """Fold constant DequantizeLinear (and the Reshape/Identity of their results) into float
    initializers and clean the graph (:func:`clean_graph`), in place. Returns the nodes folded."""
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept = []
    for node in graph.node:
        value = _fold(node, values)
        if value is None or node.op_type == "Identity" and node.input[0] not in folded:
            kept.append(node)
            continue
        values[node.output[0]] = folded[node.output[0]] = value
    if not folded:
        return 0
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in folded.items())
    clean_graph(model)
    return len(folded)


def input_normalisation(model: onnx.ModelProto) -> tuple[float, float] | None:
    """(shift, scale) of the scalar Sub/Mul/Div/Add the graph applies to its image input first
    (``y = (x − shift) · scale``), or None when it starts with something else."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"])
    current = next((i.name for i in model.graph.input if i.name not in values), None)
    shift, scale, found = 0.0, 1.0, False
    for node in model.graph.node:
        if current not in node.input or node.op_type not in ("Sub", "Mul", "Div", "Add"):
            continue
        constant = next((values[name] for name in node.input if name != current and name in values), None)
        if constant is None or np.asarray(constant).size != 1:
            break
        value = float(np.asarray(constant).reshape(-1)[0])
        if node.op_type in ("Sub", "Add"):
            shift += (value if node.op_type == "Sub" else -value) / scale
        else:
            scale *= value if node.op_type == "Mul" else 1.0 / value
        current, found = node.output[0], True
    return (shift, scale) if found else None


def prelu_as_maximum(model: onnx.ModelProto) -> int:
    """Rewrite each PRelu whose slopes are constants a <= 1 as Max(x, x·a), in place; returns how many.

    Exact: x >= 0 gives x >= a·x, x < 0 gives a·x >= x, so Max picks what PRelu computes, the same
    float product included. onnxruntime's CPU PRelu kernel is slow beside its Mul and Max."""
    graph = model.graph
    slopes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        slope = slopes.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or slope.size == 0 or float(slope.max()) > 1.0:
            nodes.append(node)
            continue
        scaled = f"{node.output[0]}__prelu_scaled"
        nodes += [onnx.helper.make_node("Mul", [node.input[0], node.input[1]], [scaled]),
                  onnx.helper.make_node("Max", [node.input[0], scaled], [node.output[0]])]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def plain_graph(model: onnx.ModelProto) -> None:
    """The float network a teacher file computes, in place: unused inputs dropped (:func:`clean_graph`),
    constant weight dequantisation folded into float, PRelus as Max(x, x·a) (all exact). The teacher
    cache runs it, and export puts it beside the student as the teacher's artifact."""
    clean_graph(model)
    fold_dequantized_weights(model)
    prelu_as_maximum(model)

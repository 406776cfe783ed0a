"""An ONNX model's bytes written directly (no ``onnx`` package): the few protobuf messages a graph needs.

Protocol buffers' wire format: each field is a varint key (field number << 3 | wire type) followed
by a varint (type 0: integers, enums; negative int64 as ten bytes of two's complement), four
little-endian bytes (type 5: float) or a varint length and that many bytes (type 2: strings,
bytes, nested messages). Repeated fields repeat their key. Only the fields of onnx.proto (IR 8)
that ``onnx_bert`` uses are written:

- ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 (OperatorSetIdProto: domain 1,
  version 2);
- GraphProto: node 1, name 2, initializer 5, input 11, output 12, value_info 13;
- NodeProto: input 1, output 2, name 3, op_type 4, attribute 5, domain 7;
- AttributeProto: name 1, f 2, i 3, ints 8, type 20 (FLOAT 1, INT 2, INTS 7);
- TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian);
- ValueInfoProto: name 1, type 2 -> TypeProto.tensor_type 1 -> elem_type 1, shape 2 ->
  TensorShapeProto.dim 1 -> dim_value 1 | dim_param 2.

tests/engines/test_onnx_proto.py parses the bytes back with the ``onnx`` package where it is installed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DTYPES", "Node", "model_bytes"]

DTYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): 6}
DTYPES[np.dtype(np.int64)] = 7
_FLOAT, _INT, _INTS = 1, 2, 7
Attribute = int | float | Sequence[int]


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str
    attrs: dict[str, Attribute] = field(default_factory=dict)
    domain: str = ""


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _strings(number: int, values: Iterable[str]) -> bytes:
    return b"".join(_bytes(number, v) for v in values)


def _attribute(name: str, value: Attribute) -> bytes:
    head = _bytes(1, name)
    if isinstance(value, float):
        return head + _varint(2 << 3 | 5) + struct.pack("<f", value) + _int(20, _FLOAT)
    if isinstance(value, int):
        return head + _int(3, value) + _int(20, _INT)
    return head + b"".join(_int(8, v) for v in value) + _int(20, _INTS)


def _node(node: Node) -> bytes:
    attrs = b"".join(_bytes(5, _attribute(k, v)) for k, v in sorted(node.attrs.items()))  # as onnx.helper
    body = _strings(1, node.inputs) + _strings(2, node.outputs) + _bytes(3, node.name) + _bytes(4, node.op_type)
    return body + attrs + (_bytes(7, node.domain) if node.domain else b"")


def _tensor(name: str, array: np.ndarray) -> bytes:
    dtype = DTYPES.get(array.dtype)
    if dtype is None:
        raise ValueError(f"initializer {name}: dtype {array.dtype} is not written")
    dims = b"".join(_int(1, n) for n in array.shape)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return dims + _int(2, dtype) + _bytes(8, name) + _bytes(9, raw)


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor = _int(1, elem_type) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor))


def model_bytes(
    nodes: Sequence[Node],
    weights: dict[str, np.ndarray],
    inputs: Sequence[tuple[str, int, Sequence[int | str]]],
    outputs: Sequence[tuple[str, int, Sequence[int | str]]],
    value_info: Sequence[tuple[str, int, Sequence[int | str]]] = (),
    *,
    opsets: dict[str, int],
    ir_version: int = 8,
    producer: str = "routeyard",
) -> bytes:
    """A serialized ModelProto: ``inputs``/``outputs``/``value_info`` (intermediate tensors' types)
    as (name, element type, dims), dims an int or a symbolic name; ``opsets`` maps a domain ("" for
    the default) to its version."""
    graph = b"".join(_bytes(1, _node(n)) for n in nodes) + _bytes(2, "graph")
    graph += b"".join(_bytes(5, _tensor(name, array)) for name, array in weights.items())
    graph += b"".join(_bytes(11, _value_info(*spec)) for spec in inputs)
    graph += b"".join(_bytes(12, _value_info(*spec)) for spec in outputs)
    graph += b"".join(_bytes(13, _value_info(*spec)) for spec in value_info)
    opset = b"".join(_bytes(8, _bytes(1, domain) + _int(2, version)) for domain, version in opsets.items())
    return _int(1, ir_version) + _bytes(2, producer) + _bytes(7, graph) + opset

"""What an ONNX file declares, read from its protobuf wire format without the onnx package.

The scoring path installs onnxruntime only, yet must refuse a graph that points at external
data files (onnxruntime would read them from beside the model) and check the metadata the
exporter stamped. A small wire-format walk does both: it descends into the graph, its nodes'
attributes (a ``Scan`` body is a subgraph) and their tensors, and skips everything else by
length, so a 20 MB model is walked in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Field numbers from onnx.proto.
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_METADATA, _MODEL_FUNCTIONS = 1, 7, 14, 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE = 5, 6, 10, 11, 22
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_EXTERNAL = 1


class MalformedOnnx(ValueError):
    """The bytes are not a well-formed ONNX protobuf."""


@dataclass
class OnnxFacts:
    ir_version: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    external_tensors: int = 0


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedOnnx("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value) for each field; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise MalformedOnnx("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise MalformedOnnx(f"unsupported wire type {wire}")
        yield number, wire, value


def _tensor(buf: memoryview, facts: OnnxFacts) -> None:
    for number, wire, value in _fields(buf):
        if (number == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL) or (
            number == _TENSOR_EXTERNAL_DATA and wire == 2
        ):
            facts.external_tensors += 1
            return


def _sparse(buf: memoryview, facts: OnnxFacts) -> None:
    for number, wire, value in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            _tensor(value, facts)


def _node(buf: memoryview, facts: OnnxFacts) -> None:
    for number, wire, value in _fields(buf):
        if number != _NODE_ATTRIBUTE or wire != 2:
            continue
        for attr_number, attr_wire, attr_value in _fields(value):
            if attr_wire != 2:
                continue
            if attr_number in (_ATTR_T, _ATTR_TENSORS):
                _tensor(attr_value, facts)
            elif attr_number in (_ATTR_G, _ATTR_GRAPHS):
                _graph(attr_value, facts)
            elif attr_number == _ATTR_SPARSE:
                _sparse(attr_value, facts)


def _graph(buf: memoryview, facts: OnnxFacts) -> None:
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(value, facts)
        elif number == _GRAPH_SPARSE:
            _sparse(value, facts)
        elif number == _GRAPH_NODE:
            _node(value, facts)


def read_facts(path: Path) -> OnnxFacts:
    """IR version, metadata and how many tensors live in external data files."""
    buf = memoryview(Path(path).read_bytes())
    facts = OnnxFacts()
    for number, wire, value in _fields(buf):
        if number == _MODEL_IR_VERSION and wire == 0:
            facts.ir_version = value
        elif number == _MODEL_GRAPH and wire == 2:
            _graph(value, facts)
        elif number == _MODEL_FUNCTIONS and wire == 2:
            for fn_number, fn_wire, fn_value in _fields(value):
                if fn_number == _FUNCTION_NODE and fn_wire == 2:
                    _node(fn_value, facts)
        elif number == _MODEL_METADATA and wire == 2:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
            facts.metadata[entry.get(1, "")] = entry.get(2, "")
    return facts

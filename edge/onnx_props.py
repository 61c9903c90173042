"""Read an ONNX file's `metadata_props` without the `onnx` package or a runtime session.

A backend that is not ONNX Runtime (OpenVINO) does not carry the ONNX
`metadata_props` into its own model, and opening an ONNX Runtime session only
to read them would cost a graph load. The props are top-level fields of the
`ModelProto` message, so a walk over its top-level protobuf fields finds them,
skipping the graph (field 7) by its length without reading it.
"""

from __future__ import annotations

from pathlib import Path

METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class PropsError(ValueError):
    """Bytes that are not a well-formed protobuf message (not an ONNX file)."""


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise PropsError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise PropsError("varint too long")


def _fields(buf: memoryview | bytes):
    """(field number, wire type, value) of each top-level field; a length-delimited value is
    a (start, end) slice of `buf`, others the integer (fixed ones as raw position)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise PropsError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise PropsError("length past the end")
            value, pos = (pos, pos + n), pos + n
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise PropsError("truncated fixed field")
            value, pos = pos, pos + size
        else:
            raise PropsError(f"unsupported wire type {wire}")
        yield number, wire, value


def entry(data: bytes) -> tuple[str, str]:
    """(key, value) of one serialized StringStringEntryProto {key = 1, value = 2}."""
    buf = memoryview(data)
    kv = {1: "", 2: ""}
    for n, w, v in _fields(buf):
        if n in kv and w == _LEN:
            try:
                kv[n] = bytes(buf[v[0]:v[1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise PropsError("metadata is not UTF-8") from None
    return kv[1], kv[2]


def read_props(path: Path | str) -> dict[str, str]:
    """The `metadata_props` of an ONNX file: its top-level fields are walked with seeks, so the
    graph is never read. Raises PropsError for a file that is not a protobuf message, OSError
    if it cannot be read."""
    props: dict[str, str] = {}
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        if size == 0:
            raise PropsError("empty file")

        def varint() -> int:
            value = shift = 0
            while True:
                b = fh.read(1)
                if not b:
                    raise PropsError("truncated varint")
                value |= (b[0] & 0x7F) << shift
                if not b[0] & 0x80:
                    return value
                shift += 7
                if shift > 63:
                    raise PropsError("varint too long")

        while fh.tell() < size:
            key = varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise PropsError("field number 0")
            if wire == _VARINT:
                varint()
                continue
            if wire not in (_LEN, _FIXED64, _FIXED32):
                raise PropsError(f"unsupported wire type {wire}")
            n = varint() if wire == _LEN else (8 if wire == _FIXED64 else 4)
            if fh.tell() + n > size:
                raise PropsError("field past the end of the file")
            if number == METADATA_PROPS and wire == _LEN:
                key, value = entry(fh.read(n))
                props[key] = value  # later keys win, as in onnx
            else:
                fh.seek(n, 1)
    return props


"""What a worker says to its supervisor: data only, in a fixed format.

A candidate runs inside the worker and can reach the worker's end of the connection,
so nothing a worker sends is trusted: no message is unpickled, each is parsed as data
and checked, and a message that breaks the format ends the worker (its cell is an
``error`` naming the breach). The supervisor's messages to the worker stay Python
objects: they go the other way, from the trusted side.

A message is one frame of the connection (``send_bytes``; the supervisor reads at
most ``MAX_FRAME`` bytes, the connection's own length prefix is checked before
anything is read):

- 4 bytes, little-endian: the length H of the header (at most ``MAX_HEADER``);
- H bytes: the header, a JSON object (UTF-8) with ``"m"``, the kind of message, and
  its fields; an array's place in it is ``{"dtype": name, "shape": [..]}`` or null;
- the arrays' bytes, in C order, one after another: exactly as many as their dtypes
  and shapes say.

The kinds: ``hello`` (pid), ``phase`` (what), ``start`` (key), ``block`` (key, index,
array: one block of a streamed family's answers), ``done`` (key, the cell's findings,
notes, error, seconds, host, outputs, and ``signs``: how many of the arrays, at the
end, are the signs that ``return_sign`` cases returned, one per output) and ``retire``
(why); a candidate's probe
sends ``candidate`` (the import's error, whether the function was found, the files of
the modules loaded).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ..backends._invoke import Encoded, dtype_of

__all__ = ["MAX_FRAME", "Message", "ProtocolError", "clip", "pack", "unpack"]

MAX_HEADER = 1 << 20
MAX_FRAME = 1 << 30  # a cell's answers: the largest family sends about 64 MiB
_MAX_TEXT = 4000  # characters of one finding, note or reason
_MAX_ITEMS = 20_000  # findings or notes of one cell, files of an import
_MAX_ARRAYS = 100_000


class ProtocolError(ValueError):
    """A frame that is not a message of this format."""


@dataclass
class Message:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: list[Encoded | None] = field(default_factory=list)


def pack(kind: str, arrays: list[Encoded | None] | None = None, **fields: Any) -> bytes:
    head: dict[str, Any] = {"m": kind, **fields}
    parts: list[bytes] = []
    if arrays is not None:
        head["arrays"] = [None if a is None else {"dtype": a[0], "shape": list(a[1])}
                          for a in arrays]  # fmt: skip
        parts = [a[2] for a in arrays if a is not None]
    h = json.dumps(head, allow_nan=True).encode()
    return b"".join([struct.pack("<I", len(h)), h, *parts])


def _text(v: Any, what: str, *, none: bool = False) -> Any:
    if v is None and none:
        return None
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise ProtocolError(f"{what} is not a string of at most {_MAX_TEXT} characters")
    return v


def _texts(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or len(v) > _MAX_ITEMS:
        raise ProtocolError(f"{what} is not a list of at most {_MAX_ITEMS} strings")
    return [_text(s, what) for s in v]


_SCHEMA: dict[str, dict[str, str]] = {
    "hello": {"pid": "int"},
    "phase": {"what": "text"},
    "start": {"key": "text"},
    "block": {"key": "text", "index": "int"},
    "done": {
        "key": "text",
        "findings": "texts",
        "notes": "texts",
        "error": "text?",
        "seconds": "float",
        "host": "text",
        "signs": "int",
    },
    "retire": {"why": "text"},
    "candidate": {"error": "text?", "found": "int", "files": "texts"},
    "probed": {"name": "text", "error": "text?", "found": "int", "files": "texts"},
}
_WITH_ARRAYS = {"block": 1, "done": None}  # how many arrays (None: any number)


def unpack(frame: bytes) -> Message:
    """The message in ``frame``; ProtocolError for anything else."""
    if len(frame) < 4:
        raise ProtocolError("a frame shorter than its header length")
    (n,) = struct.unpack_from("<I", frame)
    if n > MAX_HEADER or 4 + n > len(frame):
        raise ProtocolError(f"a header of {n} bytes in a frame of {len(frame)}")
    try:
        head = json.loads(frame[4 : 4 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"a header that is not JSON: {type(exc).__name__}") from None
    if not isinstance(head, dict) or head.get("m") not in _SCHEMA:
        raise ProtocolError("a header without a known kind of message")
    kind = head.pop("m")
    schema = _SCHEMA[kind]
    extra = set(head) - set(schema) - ({"arrays"} if kind in _WITH_ARRAYS else set())
    if extra:
        raise ProtocolError(f"{kind}: unknown fields {sorted(extra)[:5]}")
    out: dict[str, Any] = {}
    for name, t in schema.items():
        if name not in head:
            raise ProtocolError(f"{kind}: no {name}")
        v = head[name]
        if t == "int":
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**62:
                raise ProtocolError(f"{kind}: {name} is not a count")
        elif t == "float":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ProtocolError(f"{kind}: {name} is not a finite number")
            v = float(v)
        elif t == "texts":
            v = _texts(v, f"{kind}: {name}")
        else:
            v = _text(v, f"{kind}: {name}", none=t.endswith("?"))
        out[name] = v
    arrays: list[Encoded | None] = []
    if kind in _WITH_ARRAYS:
        arrays = _arrays(kind, head.get("arrays"), frame, 4 + n)
    elif 4 + n != len(frame):
        raise ProtocolError(f"{kind}: {len(frame) - 4 - n} bytes after the header")
    return Message(kind, out, arrays)


def _arrays(kind: str, meta: Any, frame: bytes, at: int) -> list[Encoded | None]:
    want = _WITH_ARRAYS[kind]
    if (
        not isinstance(meta, list)
        or len(meta) > _MAX_ARRAYS
        or (want is not None and len(meta) != want)
    ):
        raise ProtocolError(f"{kind}: arrays is not a list of the expected length")
    out: list[Encoded | None] = []
    view = memoryview(frame)
    for m in meta:
        if m is None:
            out.append(None)
            continue
        if not isinstance(m, dict) or set(m) != {"dtype", "shape"}:
            raise ProtocolError(f"{kind}: an array's description is not dtype and shape")
        name, shape = m["dtype"], m["shape"]
        if not isinstance(name, str) or len(name) > 32:
            raise ProtocolError(f"{kind}: a dtype that is not a short name")
        try:
            dt = dtype_of(name)
        except ValueError:
            raise ProtocolError(f"{kind}: dtype {name[:32]!r} is not a plain number") from None
        if (
            not isinstance(shape, list)
            or len(shape) > 32
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape
            )
        ):
            raise ProtocolError(f"{kind}: a shape that is not a list of sizes")
        nbytes = math.prod(shape) * dt.itemsize
        if at + nbytes > len(frame):
            raise ProtocolError(f"{kind}: the arrays need more bytes than the frame holds")
        out.append((name, tuple(shape), bytes(view[at : at + nbytes])))
        at += nbytes
    if at != len(frame):
        raise ProtocolError(f"{kind}: {len(frame) - at} bytes after the arrays")
    return out


def clip(v: Any) -> Any:
    """A string or list of strings cut to what a message may hold (the worker's side)."""
    if isinstance(v, str):
        return v if len(v) <= _MAX_TEXT else v[: _MAX_TEXT - 3] + "..."
    return [clip(str(s)) for s in list(v)[:_MAX_ITEMS]]

"""The worker's messages: data in a fixed format, and nothing else gets through."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conformance.backends._invoke import encode
from conformance.execution import _sandbox
from conformance.execution._wire import MAX_HEADER, ProtocolError, clip, pack, unpack


def _frame(head: object, tail: bytes = b"") -> bytes:
    h = json.dumps(head).encode()
    return struct.pack("<I", len(h)) + h + tail


def test_a_result_goes_through_as_the_arrays_and_texts_it_holds():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = unpack(pack("done", [encode(a), None], key="k", findings=["f"], notes=[],
                      error=None, seconds=1.5, host="h", signs=0))  # fmt: skip
    assert msg.kind == "done" and msg.fields["findings"] == ["f"] and msg.fields["error"] is None
    first = msg.arrays[0]
    assert first is not None
    name, shape, data = first
    assert (name, shape) == ("<f4", (2, 3)) and bytes(data) == a.tobytes()
    assert msg.arrays[1] is None


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (pickle.dumps(("done", "k", object)), "header"),  # what the pipe carried before
        (b"\x01\x00", "shorter"),
        (struct.pack("<I", MAX_HEADER + 1) + b"{}", "header of"),
        (_frame(["hello"]), "known kind"),
        (_frame({"m": "exec", "code": "print(1)"}), "known kind"),
        (_frame({"m": "hello", "pid": 1, "extra": 2}), "unknown fields"),
        (_frame({"m": "hello", "pid": "1"}), "not a count"),
        (_frame({"m": "phase", "what": "x" * 5000}), "string"),
        (
            _frame(
                {
                    "m": "done",
                    "key": "k",
                    "findings": [1],
                    "notes": [],
                    "error": None,
                    "seconds": 0,
                    "host": "",
                    "arrays": [],
                }
            ),
            "string",
        ),
        (
            _frame(
                {
                    "m": "done",
                    "key": "k",
                    "findings": [],
                    "notes": [],
                    "error": None,
                    "seconds": float("nan"),
                    "host": "",
                    "arrays": [],
                }
            ),
            "finite",
        ),
        (
            _frame(
                {"m": "block", "key": "k", "index": 0, "arrays": [{"dtype": "O", "shape": [1]}]},
                b"x" * 8,
            ),
            "plain number",
        ),
        (
            _frame(
                {"m": "block", "key": "k", "index": 0, "arrays": [{"dtype": "<f4", "shape": [4]}]},
                b"x" * 8,
            ),
            "more bytes",
        ),
        (
            _frame(
                {"m": "block", "key": "k", "index": 0, "arrays": [{"dtype": "<f4", "shape": [1]}]},
                b"x" * 8,
            ),
            "after the arrays",
        ),
        (_frame({"m": "block", "key": "k", "index": 0, "arrays": [None, None]}), "length"),
        (_frame({"m": "retire", "why": "x"}, b"tail"), "after the header"),
    ],
)
def test_anything_else_is_a_protocol_error(frame, why):
    with pytest.raises(ProtocolError, match=why):
        unpack(frame)


def test_texts_are_clipped_on_the_workers_side():
    assert len(clip("x" * 10_000)) <= 4000
    assert len(clip(["x"] * 50_000)) <= 20_000


@pytest.mark.skipif(not _sandbox.abi(), reason=f"sandbox: {_sandbox.describe()}")
def test_the_sandbox_allows_its_directory_and_nothing_else(tmp_path):
    """In a process of its own: writes beneath the allowed directory only, no TCP
    connection, no signal to its parent; reading and forking still work."""
    allowed = tmp_path / "scratch"
    allowed.mkdir()
    code = textwrap.dedent(
        f"""
        import os, socket
        from conformance.execution import _sandbox
        assert _sandbox.restrict([{str(allowed)!r}])
        open({str(allowed / "ok")!r}, "w").write("x")
        out = []
        for what, act in [
            ("write", lambda: open({str(tmp_path / "outside")!r}, "w")),
            ("tcp", lambda: socket.create_connection(("127.0.0.1", 9), timeout=1)),
            ("signal", lambda: os.kill(os.getppid(), 0)),
        ]:
            try:
                act()
                out.append(what + ": allowed")
            except OSError as exc:
                out.append(what + ": " + type(exc).__name__)
        open("/dev/null", "w").write("x")
        print(";".join(out), "read:", len(open(os.__file__).read()) > 0)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = r.stdout.strip()
    assert "write: PermissionError" in said and "signal: PermissionError" in said, said
    assert said.endswith("read: True"), said
    if _sandbox.abi() >= 4:
        assert "tcp: PermissionError" in said, said
    assert (allowed / "ok").exists() and not (tmp_path / "outside").exists()


def test_require_sandbox_refuses_a_run_without_one(tmp_path, monkeypatch):
    from conformance import RunConfig, backend, candidate, family, run
    from conformance._runner import PlanError

    monkeypatch.setattr(_sandbox, "abi", lambda: 0)
    monkeypatch.setenv("CONFORMANCE_SANDBOX", "off")
    cfg = RunConfig(
        [candidate("impl")], [backend("numpy:cpu")], ["float32"], [family("normal")],
        results=tmp_path / "r", cache=tmp_path / "c", progress=False, require_sandbox=True,
    )  # fmt: skip
    with pytest.raises(PlanError, match=r"--require-sandbox: .*switched off"):
        run(cfg, log=lambda s: None)
    assert not (tmp_path / "r").exists()


def test_a_result_says_how_many_of_its_arrays_are_signs():
    a = encode(np.zeros(2, np.float32))
    msg = unpack(pack("done", [a, a], key="k", findings=[], notes=[], error=None,
                      seconds=0.0, host="h", signs=1))  # fmt: skip
    assert msg.fields["signs"] == 1 and len(msg.arrays) == 2
    with pytest.raises(ProtocolError, match="done: no signs"):
        unpack(pack("done", [a], key="k", findings=[], notes=[], error=None, seconds=0.0,
                    host="h"))  # fmt: skip

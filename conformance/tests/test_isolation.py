"""Isolation: nothing a candidate does reaches another cell, the sweep or pytest.

The hostile candidates (``_hostile``) crash or hang at import, segfault, exit, hang with
a child process, change the rounding mode, leave threads behind and return things that
are not arrays; impl's and scipy's cells beside them must be bit-identical to a sweep
without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import reference
from conformance import RunConfig, backend, candidate, family, run
from conformance.execution import _sandbox
from conformance.execution._isolation import Supervisor
from conformance.functions._candidates import Candidate

from ._hostile import write_package

H = "conformance.tests._helpers"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("hostile")
    targets = write_package(root)
    sys.path.insert(0, str(root))
    yield root, targets
    sys.path.remove(str(root))


def _sleepers(seconds: str = "611") -> list[int]:
    """Live `sleep 611` processes (the hostile candidate's child; 613: its daemon)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/cmdline").read_bytes() == f"sleep\x00{seconds}\x00".encode():
                    out.append(int(d))
            except OSError:
                pass
    return out


def _config(tmp: Path, cands: list[Candidate], name: str, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        candidates=cands, backends=[backend("numpy:cpu")], dtypes=["float32"],
        families=[family("normal"), family("specials")], jobs=2, results=tmp / name,
        cache=tmp / "cache", progress=False, timeout=8.0,
    )  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


@contextlib.contextmanager
def _bait(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """What the cheating candidates aim at (through CHEAT_* variables): the results and
    cache directories, a file a pickled command would create, this process (SIGUSR1
    recorded, not fatal) and a TCP port that counts its connections."""
    seen: dict[str, Any] = {"signals": 0, "connections": 0}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                listener.accept()[0].close()
                seen["connections"] += 1
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    old = signal.signal(signal.SIGUSR1, lambda *a: seen.__setitem__("signals", seen["signals"] + 1))
    env = {
        "CHEAT_PATHS": os.pathsep.join(str(tmp_path / d) for d in ("mixed", "cache")),
        "CHEAT_MARK": str(tmp_path / "pickled-code-ran"),
        "CHEAT_PIDS": str(os.getpid()),
        "CHEAT_PORT": str(listener.getsockname()[1]),
    }
    os.environ.update(env)
    try:
        yield seen
    finally:
        for k in env:
            os.environ.pop(k, None)
        signal.signal(signal.SIGUSR1, old)
        stop.set()
        thread.join(2)
        listener.close()


# the cheats that only a sandbox stops (a process of the same user may write and signal)
_SANDBOXED = ("forges_files", "signals_others", "opens_a_socket")


@pytest.mark.extended
def test_hostile_candidates_cannot_change_impls_or_scipys_cells(hostile, tmp_path):
    _, targets = hostile
    if not _sandbox.abi():  # without Landlock these would succeed: not run
        targets = [t for t in targets if t.split(":")[-1] not in _SANDBOXED]
    # the rounding-mode candidate first: the order of --candidates must not matter
    first = [Candidate(t, t) for t in targets if t.endswith("rounding_up")]
    rest = [Candidate(t, t) for t in targets if not t.endswith("rounding_up")]
    mixed_cands = [*first, candidate("impl"), *rest, candidate("scipy")]
    t0 = time.perf_counter()
    with _bait(tmp_path) as seen:
        mixed = run(_config(tmp_path, mixed_cands, "mixed"), log=lambda s: None)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean = run(
        _config(tmp_path, [candidate("impl"), candidate("scipy")], "clean",
                cache=tmp_path / "cache-clean"),
        log=lambda s: None,
    )  # fmt: skip
    clean_s = time.perf_counter() - t0
    # the oracle's cache the cheats aimed at holds what a clean sweep's holds
    entries = sorted(p.relative_to(tmp_path / "cache-clean")
                     for p in (tmp_path / "cache-clean").rglob("*.npz"))  # fmt: skip
    assert entries and entries == sorted(
        p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*.npz")
    )
    for e in entries:
        a = reference.OracleResult.load_tagged(tmp_path / "cache" / e)
        b = reference.OracleResult.load_tagged(tmp_path / "cache-clean" / e)
        assert a[1:] == b[1:] and a[0].expected.tobytes() == b[0].expected.tobytes(), e
        assert np.array_equal(a[0].residual, b[0].residual, equal_nan=True), e
    ours = mixed[mixed.candidate.isin(["impl", "scipy"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        ours.drop(columns="seconds"), clean.drop(columns="seconds").reset_index(drop=True)
    )
    assert (ours.status == "pass").all()
    why = mixed.set_index(["candidate", "family"])["reason"]
    status = mixed.set_index(["candidate", "family"])["status"]
    for fam in ("normal", "specials"):
        assert "exited with code 3 while importing the candidate" in why["hostile_exit:f", fam]
        assert "timeout" in why["hostile_hang:f", fam]
        assert "while importing the candidate" in why["hostile_hang:f", fam]
        assert "SyntaxError" in why["hostile_syntax:f", fam]
        assert "hostile_syntax.py, line 2" in why["hostile_syntax:f", fam]
        assert "signal 11" in why["hostile.calls:segfault", fam]
        assert "calls.py" in why["hostile.calls:segfault", fam]  # the crashing frame
        assert "exited with code 5 while running this cell" in why["hostile.calls:exits", fam]
        assert "timeout" in why["hostile.calls:hang_with_child", fam]
        assert status["hostile.calls:rounding_up", fam] == "fail"
        assert "rounding mode to nearest -> upward" in why["hostile.calls:rounding_up", fam]
        # the same at import, before any guard's snapshot: undone, and a finding
        assert status["hostile_rounds_at_import:f", fam] == "fail"
        assert (
            "changed the floating-point environment when imported: rounding mode"
            in (why["hostile_rounds_at_import:f", fam])
        )
        # an exception whose message raises is an error of the cell, not the harness's
        assert status["hostile.calls:bad_message", fam] == "error"
        assert (
            "_Unprintable (its message raised RuntimeError)"
            in why["hostile.calls:bad_message", fam]
        )
        # torch first imported by the candidate's call: its defaults are no change
        lazy = "hostile.calls:lazy_torch", fam
        assert status[lazy] == "pass", why[lazy]
        # the right values in the other byte order: the same dtype (the specification)
        big = "hostile.calls:big_endian", fam
        assert status[big] == "pass", why[big]
        # a return that is not an array is a finding, not a crash of the harness
        for t, text in (
            ("leftover_threads", "returned NoneType, expected an array"),
            ("returns_none", "returned NoneType, expected an array"),
            ("returns_str", "returned str, expected an array"),
            ("returns_object", "returned an object array"),
        ):
            assert status[f"hostile.calls:{t}", fam] == "fail", t
            assert text in why[f"hostile.calls:{t}", fam], t
    assert not _sleepers(), "a timed-out candidate's child process survived"
    # a daemon detached with fork, setsid, fork is adopted by its worker, noted, killed
    notes = mixed.set_index(["candidate", "family"])["notes"]
    assert (
        "left 1 child processes running (killed)"
        in notes["hostile.calls:detached_daemon", "normal"]
    )
    assert not _sleepers("613"), "a detached daemon survived the sweep"
    # written to cheat: nothing a worker sends is unpickled, nor extends its deadline
    for fam in ("normal", "specials"):
        assert status["hostile.calls:pickles_code", fam] == "error"
        assert "worker broke the protocol" in why["hostile.calls:pickles_code", fam]
        assert "timeout" in why["hostile.calls:floods_the_pipe", fam]
        assert status["hostile.calls:extra_outputs", fam] == "error"
        # not "signal 9": that is the supervisor's kill, not the cause
        assert "worker closed its connection" in why["hostile.calls:closes_fds", fam]
    assert "1000 answers for" in why["hostile.calls:extra_outputs", "normal"]
    assert not (tmp_path / "pickled-code-ran").exists()
    if _sandbox.abi():  # the sandbox's: no file written, no signal, no connection
        for t in _SANDBOXED:
            assert status[f"hostile.calls:{t}", "normal"] == "pass", why[
                f"hostile.calls:{t}", "normal"
            ]
        assert not [p for p in tmp_path.rglob("planted")]
        assert not [
            p for p in tmp_path.rglob("*") if p.is_file() and b"forged" in p.read_bytes()[-6:]
        ]
        assert seen == {"signals": 0, "connections": 0}
    print(
        f"mixed sweep: {len(mixed)} cells in {elapsed:.1f}s; clean: {len(clean)} in {clean_s:.1f}s"
    )


def test_a_supervisor_keeps_the_workers_of_the_pairs_used_last(tmp_path):
    """keep_idle=2 over four runs of three pairs: a pair's kept worker runs its next
    cells, and the pair used longest ago is the one let go (before, the first two
    pairs were kept for good and every later one stopped: a cluster's agent, which
    runs pair after pair, kept none of its current ones)."""
    from conformance.execution._cell import CellSpec

    why: list[str | None] = []
    sup = Supervisor(
        jobs=1, timeout=60, log_dir=tmp_path, keep_idle=2,
        on_result=lambda s, raw, reason: why.append(reason),
    )  # fmt: skip
    np_pair = ("impl", "numpy:cpu")
    try:
        pids = []
        for b in ("numpy:cpu", "array_api_strict:cpu", "numpy:cpu", "array_api_strict:device1"):
            c = CellSpec(candidate("impl"), backend(b), "float32", family("specials"), "quick")
            sup.add([c])
            sup.run()
            if b == "numpy:cpu":
                pids.append(sup.idle[np_pair].proc.pid)
        assert list(sup.idle) == [np_pair, ("impl", "array_api_strict:device1")]
        assert pids[0] == pids[1] == sup.idle[np_pair].proc.pid
    finally:
        sup.close()
    assert why == [None] * 4


def test_a_worker_that_dies_at_start_is_tried_twice_then_its_cells_fail(tmp_path):
    results: dict[str, Any] = {}
    spec_cells = []
    from conformance.execution._cell import CellSpec

    for fam in ("normal", "specials"):
        spec_cells.append(
            CellSpec(candidate("impl"), backend("numpy:cpu"), "float32", family(fam), "quick")
        )
    sup = Supervisor(
        jobs=1, timeout=30, log_dir=tmp_path,
        on_result=lambda s, raw, why: results.__setitem__(s.key, (raw, why)),
        target=__import__(H, fromlist=["dies_at_start"]).dies_at_start,
    )  # fmt: skip
    sup.add(spec_cells)
    t0 = time.monotonic()
    sup.run()  # before: restarted forever
    sup.close()
    assert time.monotonic() - t0 < 60
    assert len(results) == 2
    for raw, why in results.values():
        assert raw is None and "exited with code 9 before running any cell, twice" in why


@pytest.mark.parametrize(("jobs", "how"), [(1, "file"), (2, "file"), (2, "stdin")])
def test_a_script_without_a_main_guard_runs(tmp_path, jobs, how):
    """A script that starts a sweep at import: multiprocessing runs the main script again
    in every child, so each worker died before its first cell and was restarted
    forever. Workers no longer import the caller's main script, nor do the processes
    that fill the oracle's cache (two jobs, a cold cache, two dtypes: a pool), and a
    sweep piped into ``python -`` runs too (its children looked for a file "<stdin>")."""
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from conformance import RunConfig, backend, candidate, family, run

        table = run(RunConfig(
            [candidate("impl")], [backend("numpy:cpu")], ["float32", "float64"],
            [family("normal")], jobs={jobs}, results=Path({str(tmp_path / "res")!r}),
            cache=Path({str(tmp_path / "cache")!r}), progress=False, timeout=60,
        ))
        print("STATUS", table.status.tolist(), table.reason.tolist())
        """
    )
    if how == "file":
        script = tmp_path / "sweep.py"
        script.write_text(code)
        args: dict[str, Any] = {"args": [sys.executable, str(script)]}
    else:
        args = {"args": [sys.executable, "-"], "input": code}
    r = subprocess.run(**args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "STATUS ['pass', 'pass']" in r.stdout, r.stdout[-2000:]


def test_a_timed_out_candidate_leaves_no_process_holding_the_output(hostile, tmp_path):
    root, _ = hostile
    cmd = [
        sys.executable, "-m", "conformance", "run", "--candidates",
        "hostile.calls:hang_with_child", "--backends", "numpy:cpu", "--dtypes", "float32",
        "--families", "normal", "--timeout", "3", "--no-progress",
        "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # like `conformance run ... | tail`: the pipe must reach end-of-file
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=120, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 cells: 1 error" in r.stdout
    assert not _sleepers()


def test_the_plugin_survives_a_segfault_and_a_hang(hostile, tmp_path):
    root, _ = hostile
    cmd = [
        sys.executable, "-m", "pytest", "--pyargs", "conformance", "-p", "no:cacheprovider",
        "--candidate", "hostile.calls:segfault", "--candidate", "hostile.calls:hang_with_child",
        "--candidate", "impl", "--backends", "numpy:cpu", "--dtypes", "float32",
        "--families", "normal", "--conformance-timeout", "3", "--oracle-cache",
        str(tmp_path / "cache"), "-q",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 failed, 1 passed" in r.stdout, r.stdout[-3000:]
    assert "signal 11" in r.stdout and "timeout: no result after 3s" in r.stdout
    assert not _sleepers()
    # in process, for a debugger: the good candidate alone
    alone = [c for c in cmd if not c.startswith("hostile")]
    alone = [
        c for i, c in enumerate(alone) if not (c == "--candidate" and alone[i + 1] == "--candidate")
    ]
    r = subprocess.run(
        [*alone, "--conformance-in-process"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="prctl: Linux only")
def test_kill_9_of_run_leaves_no_process_behind(hostile, tmp_path):
    """run killed with SIGKILL while a candidate hangs with a child: the fork server
    (its parent-death signal) kills every process below it, the hanging worker and
    its child included, and exits. Before, all three lived on."""
    import signal

    root, _ = hostile
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.getcwd()}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "--candidates",
         "hostile.calls:hang_with_child", "--backends", "numpy:cpu", "--dtypes", "float32",
         "--families", "normal", "--results", str(tmp_path / "res"), "--cache",
         str(tmp_path / "cache"), "--no-progress", "--timeout", "120"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _sleepers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sleepers(), "the candidate's child never started"
        below = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in below if _alive(p)]
        assert not left and not _sleepers(), f"{len(left)} processes outlived run"
    finally:
        proc.kill()


def _descendants(pid: int) -> list[int]:
    from conformance.execution._worker import _children

    return _children(pid)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def test_a_worker_past_its_memory_limit_errs_alone(hostile, tmp_path):
    """--memory limits each worker's address space: a candidate that allocates past it
    gets 'error: memory limit (2 GiB): MemoryError ...' in its cells, instead of the
    kernel's OOM killer choosing among the machine's processes; impl beside it passes.
    The limit is recorded in the fingerprint and is part of every cell's judge."""
    _, targets = hostile
    cands = [Candidate(t, t) for t in targets if t.endswith("huge_allocation")]
    t = run(
        _config(tmp_path, [*cands, candidate("impl")], "mem", memory=2 << 30), log=lambda s: None
    )
    why = t.set_index(["candidate", "family"])["reason"]
    status = t.set_index(["candidate", "family"])["status"]
    for fam in ("normal", "specials"):
        assert status["hostile.calls:huge_allocation", fam] == "error"
        assert "memory limit (2 GiB): MemoryError" in why["hostile.calls:huge_allocation", fam]
        assert status["impl", fam] == "pass"
    import json

    fp = json.loads((tmp_path / "mem" / "fingerprint.json").read_text())
    assert fp["run"]["memory_per_worker"] == 2 << 30
    # without the limit, the same allocation is no error
    t = run(_config(tmp_path, cands, "nomem", memory=0), log=lambda s: None)
    assert (t.status == "pass").all(), t.reason.tolist()

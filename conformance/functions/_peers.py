"""The peers' own test suites as families of the matrix, read from the installed
packages (nothing of them is copied here). Each serves the three functions.

``torch-opinfo``: every sample input of PyTorch's OpInfos of the cell's function
(``torch.testing._internal.common_methods_invocations``, which needs ``expecttest``),
in each format: ``log_softmax`` and ``softmax`` (the same samples; the float64 cell
also holds the ``with_dtype`` variant's samples, any input dtype computed in float64,
widened exactly) and ``logsumexp`` (its dims and keepdim; float32 and float64 add
torch's large inputs in [1e3, 2e3) and [1e6, 2e6)). The candidates are called as
``fn(x, axis=...)``: a logsumexp sample's one dim is an int axis, two a tuple, and a
keepdim sample is scored on the reduced shape. Each sample is scored two ways: by the
oracle (the ULP error, as every family) and by torch's own test, its ``assert_close``
against torch's result (``torch.nn.functional.log_softmax``, ``softmax``,
``torch.logsumexp``); where the two disagree, the oracle decides and the cell's notes
say which samples torch's expectation would have judged wrongly. On torch backends the
float64 samples also go through ``torch.autograd.gradcheck`` and ``gradgradcheck``
with forward-mode AD, and a failure fails the cell.

``scipy-suite``: SciPy's own test class of the function (``TestLogSoftmax``,
``TestSoftmax``, ``TestLogSumExp`` of the installed
``scipy/special/tests/test_logsumexp.py``, run by pytest in a process of its own, with
SciPy's conftest) with the function it calls replaced by the candidate
(``_scipy_patch``: logsumexp's ``keepdims`` reshapes the candidate's answer, and a test
that passes ``b`` or ``return_sign`` to a candidate without them is skipped, counted in
the notes). On ``numpy:cpu`` it runs twice, without ``SCIPY_ARRAY_API`` and with it; on
the other backends its ``xp`` fixture offers (array_api_strict, torch, JAX, Dask,
CuPy), once with ``SCIPY_ARRAY_API`` naming that backend alone, and only the tests
that take ``xp``. Its verdict is SciPy's: a failing test fails the cell, with its class,
name and message. The tests SciPy marks xfail for its own function (``--runxfail``)
judge the candidate too.

Where torch or expecttest (torch-opinfo), or SciPy's tests (scipy-suite), are absent,
the family's cells are ``not run`` with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reference import Format

__all__ = [
    "SCIPY_SUITE_BACKENDS", "opinfo_annotate", "opinfo_cases", "opinfo_check",
    "opinfo_unavailable", "scipy_suite_check", "scipy_suite_unavailable", "suite_cases",
]  # fmt: skip

# each function's OpInfo variants (op_db names them as the functions are named here)
_VARIANTS: dict[str, tuple[str, ...]] = {
    "log_softmax": ("", "with_dtype"),
    "softmax": ("", "with_dtype"),
    "logsumexp": ("",),
}
_WITH_DTYPE = "with_dtype(float64) of "


@functools.cache
def opinfo_unavailable() -> str | None:
    """Why the OpInfo samples cannot be read here (None: they can)."""
    try:
        _ops()
    except ImportError as exc:
        return f"torch-opinfo needs torch and expecttest: {exc}"
    except Exception as exc:  # a torch whose test internals moved
        return f"torch-opinfo: cannot read torch's OpInfos: {type(exc).__name__}: {exc}"
    return None


@functools.cache
def _ops() -> dict[tuple[str, str], Any]:
    """(function, variant) -> its OpInfo."""
    import torch  # noqa: F401
    from torch.testing._internal.common_methods_invocations import op_db

    ops = {(o.name, o.variant_test_name): o for o in op_db if o.name in _VARIANTS}
    missing = [
        f"{f}:{v}" if v else f for f, vs in _VARIANTS.items() for v in vs if (f, v) not in ops
    ]
    if missing:
        raise LookupError(f"torch's op_db has no OpInfo(s) {missing}")
    return ops


def _to_numpy(t: Any) -> NDArray[Any]:
    import torch

    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return np.asarray(t.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    return np.asarray(t.numpy())


def _axis(args: tuple[Any, ...]) -> tuple[int | tuple[int, ...], str]:
    """The candidate's axis from a sample's positional arguments, and their text:
    softmax's ``(dim,)``; logsumexp's ``(dims, keepdim)``, one dim as an int (a 0-d
    input's ``(0,)`` is its element, as NumPy reads axis 0 of a 0-d array). The
    candidates are called as ``fn(x, axis=...)``: a keepdim sample is scored on the
    reduced shape (keepdim only reshapes the answer)."""
    if len(args) == 1:
        (dim,) = args
        return int(dim), f"dim={dim}"
    dims, keepdim = args
    dims = tuple(int(d) for d in (dims if isinstance(dims, tuple | list) else (dims,)))
    axis = dims[0] if len(dims) == 1 else dims
    return axis, f"dim={dims}, keepdim={bool(keepdim)}"


def _samples(
    variant: str, dtype: str, function: str = "log_softmax"
) -> list[tuple[NDArray[Any], int | tuple[int, ...], str]]:
    """(input, axis, shape text) of each sample, drawn as torch's tests draw them (the
    global seed fixed, so that the inputs are the same in every process)."""
    import torch

    torch.manual_seed(0)
    out = []
    op = _ops()[(function, variant)]
    for s in op.sample_inputs("cpu", getattr(torch, dtype), requires_grad=False):
        axis, text = _axis(tuple(s.args))
        out.append((_to_numpy(s.input.detach()), axis, f"{tuple(s.input.shape)}, {text}"))
    return out


def opinfo_cases(
    fmt: Format, profile: str, rng: np.random.Generator, function: str = "log_softmax"
) -> list[Any]:
    """The family's cases for a function: its OpInfos' samples (both profiles take
    every sample)."""
    from ._case import Case

    if opinfo_unavailable() is not None:
        return []
    cases = [
        Case(x, axis, f"OpInfo sample {i}: {shape}")
        for i, (x, axis, shape) in enumerate(_samples("", fmt.name, function))
    ]
    if fmt.name == "float64" and "with_dtype" in _VARIANTS[function]:
        # function(x, dim, dtype=torch.float64) for any x
        for src in ("float16", "bfloat16", "float32", "float64"):
            for i, (x, axis, shape) in enumerate(_samples("with_dtype", src, function)):
                wide = x.astype(np.float64)  # exact: every format widens into float64
                cases.append(Case(wide, axis, f"{_WITH_DTYPE}{src} sample {i}: {shape}"))
    return cases


def opinfo_check(
    spec: Any, fn: Callable[..., Any], cases: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """Worker side, torch backends, float64: gradcheck and gradgradcheck of the
    candidate with forward and backward mode and batched gradients, on each sample of
    the function's OpInfo (the with_dtype samples repeat their inputs: skipped). Findings, one per
    failing sample; a note with the count."""
    backend = spec.backend
    if backend.library != "torch" or spec.dtype != "float64":
        return [], []
    import torch

    findings: list[str] = []
    checked = 0
    for case in cases:
        if case.label.startswith(_WITH_DTYPE):
            continue
        checked += 1
        # strides as torch makes them (NumPy's empty arrays have stride 0, which
        # gradcheck refuses)
        x = torch.from_numpy(np.array(case.x)).clone(memory_format=torch.contiguous_format)
        x = x.to(backend.device).requires_grad_()

        def f(v: Any, axis: Any = case.axis) -> Any:
            return fn(v, axis=axis)

        try:
            ok = torch.autograd.gradcheck(
                f, (x,), check_forward_ad=True, check_backward_ad=True, check_batched_grad=True
            ) and torch.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True)
            if not ok:
                findings.append(f"gradcheck returned False on {case.label}")
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            findings.append(f"gradcheck failed on {case.label}: {type(exc).__name__}: {first}")
    passed = checked - len(findings)
    return findings, [
        f"gradcheck and gradgradcheck, forward and backward AD: {passed} of {checked} samples pass"
    ]


def _torch_expected(function: str, x: Any, axis: Any) -> Any:
    """torch's own answer, as its OpInfo test computes its reference."""
    import torch

    if function == "logsumexp":
        return torch.logsumexp(x, dim=axis)
    return getattr(torch.nn.functional, function)(x, dim=axis)


def opinfo_annotate(
    cases: Sequence[Any], got: Sequence[Any], results: Sequence[Any],
    function: str = "log_softmax",
) -> list[str]:  # fmt: skip
    """Supervisor side: torch's own judgement of each answered sample, its
    ``assert_close`` against torch's function (``torch.nn.functional.log_softmax``,
    ``softmax``, ``torch.logsumexp``) at the dtype's default tolerances, beside the
    oracle's. A note per cell: how many samples torch's test passes, and each
    disagreement with the oracle (whose verdict counts)."""
    import torch

    from ._functions import function as function_of

    shape_of = function_of(function).out_shape
    agree = disagree = 0
    notes = []
    for case, g, res in zip(cases, got, results, strict=False):
        if g is None or res is None or g.shape != shape_of(case.x.shape, case.axis):
            continue
        want = _torch_expected(function, _tensor(case.x), case.axis)
        try:
            torch.testing.assert_close(_tensor(g), want, equal_nan=True)
            torch_ok = True
        except AssertionError:
            torch_ok = False
        ours = float(np.max(res.ulp_error(g), initial=0.0))
        theirs = float(np.max(res.ulp_error(_to_numpy(want)), initial=0.0))
        if torch_ok:
            agree += 1
        else:
            disagree += 1
            notes.append(
                f"torch's assert_close rejects {case.label} (the candidate {ours:.3g} ULP, "
                f"torch's expected value {theirs:.3g} ULP from the oracle)"
            )
    head = f"torch's assert_close: {agree} of {agree + disagree} samples pass"
    return [head, *notes[:5]] if agree + disagree else []


def _tensor(a: NDArray[Any]) -> Any:
    """``a`` as a CPU tensor of its own dtype (bfloat16 through its bits)."""
    import torch

    a = a.copy(order="C")  # not np.ascontiguousarray: it makes 0-d arrays 1-d
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


# -- scipy-suite ----------------------------------------------------------------------

# backend -> (the id of SciPy's xp fixture, SCIPY_DEVICE)
SCIPY_SUITE_BACKENDS: dict[str, tuple[str, str]] = {
    "numpy:cpu": ("numpy", "cpu"),
    "array_api_strict:cpu": ("array_api_strict", "cpu"),
    "torch:cpu": ("torch", "cpu"),
    "torch:cuda": ("torch", "cuda"),
    "jax:cpu": ("jax.numpy", "cpu"),
    "jax:gpu": ("jax.numpy", "cuda"),
    "dask:cpu": ("dask.array", "cpu"),
    "cupy:cuda": ("cupy", "cuda"),
}
# each function's test class in scipy/special/tests/test_logsumexp.py
SCIPY_CLASSES = {
    "log_softmax": "TestLogSoftmax",
    "softmax": "TestSoftmax",
    "logsumexp": "TestLogSumExp",
}
_SCIPY_CLASS = SCIPY_CLASSES["log_softmax"]


def _scipy_tests() -> tuple[Path, Path]:
    """(scipy's package directory, its test module of the three functions), found
    without importing scipy."""
    from ._candidates import locate

    init = locate("scipy")
    if init is None:
        raise ImportError("scipy is not installed")
    root = init.parent
    test = root / "special" / "tests" / "test_logsumexp.py"
    if not (root / "conftest.py").is_file() or not test.is_file():
        raise FileNotFoundError(f"this scipy ({root}) was installed without its tests")
    if _SCIPY_CLASS not in test.read_text(encoding="utf-8"):
        raise LookupError(f"{test} has no {_SCIPY_CLASS}")
    return root, test


@functools.cache
def scipy_suite_unavailable() -> str | None:
    """Why SciPy's tests cannot run here (None: they can): SciPy without its tests, or
    no pytest to run them (found without importing it). Either is the environment's
    lack, not the candidate's error: the family's cells are not run, with this reason."""
    import importlib.util

    try:
        _scipy_tests()
    except (ImportError, OSError, LookupError) as exc:
        return f"scipy-suite: {exc}"
    if importlib.util.find_spec("pytest") is None:
        return "scipy-suite: pytest is not installed (SciPy's tests run under it)"
    return None


def suite_cases(fmt: Format, profile: str, rng: np.random.Generator) -> list[Any]:
    """A suite has no inputs of its own: its tests make theirs."""
    return []


def scipy_suite_check(
    spec: Any, fn: Callable[..., Any], cases: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """Worker side: SciPy's test class of the cell's function on the candidate
    (``spec.candidate.target``) for the cell's backend, in pytest processes of their own
    (``cases`` is empty: the tests make their own inputs). Findings: each failing test
    (``TestSoftmax::test_...``) and its message's first line; notes: the counts of each
    run."""
    xp_id, device = SCIPY_SUITE_BACKENDS[spec.backend.name]
    function = spec.function
    cls = SCIPY_CLASSES[function]
    _, test = _scipy_tests()
    if f"class {cls}" not in test.read_text(encoding="utf-8"):
        raise LookupError(f"this scipy's {test.name} has no {cls}")
    runs: list[tuple[str, str | None]] = []
    if xp_id == "numpy":
        runs.append(("without SCIPY_ARRAY_API", None))
    runs.append((f"SCIPY_ARRAY_API={xp_id}", json.dumps([xp_id])))
    findings: list[str] = []
    notes: list[str] = []
    for label, api in runs:
        counts, failures, skips = _run_scipy_suite(
            spec.candidate.target, api, device, xp_id, function
        )
        shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no test"
        notes.append(f"scipy {cls} {label}: {shown}")
        if skips:
            notes.append(f"scipy {cls} {label}: skipped by the harness: {skips}")
        findings += [f"{label}: {f}" for f in failures]
        if counts["passed"] + counts["failed"] == 0:
            findings.append(f"{label}: no test of {cls} ran")
    return findings, notes


def _run_scipy_suite(
    target: str, api: str | None, device: str, xp_id: str, function: str = "log_softmax"
) -> tuple[dict[str, int], list[str], str]:
    root, test = _scipy_tests()
    cls = SCIPY_CLASSES[function]
    env = {k: v for k, v in os.environ.items() if k not in ("SCIPY_ARRAY_API", "SCIPY_DEVICE")}
    env["CONFORMANCE_SUITE_TARGET"] = target
    env["CONFORMANCE_SUITE_FUNCTION"] = function
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if api is not None:
        env["SCIPY_ARRAY_API"] = api
        env["SCIPY_DEVICE"] = device
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable, "-m", "pytest", f"{test}::{cls}",
            "-p", "conformance.functions._scipy_patch", "-p", "no:log_softmax_conformance",
            "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(root),
            "--confcutdir", str(root), "-q", f"--junitxml={report}",
            # SciPy's xfail marks state what SciPy's own function lacks: the
            # candidate is judged on those tests too
            "--runxfail",
        ]  # fmt: skip
        if xp_id != "numpy":  # the other backends: the tests that take xp
            cmd += ["-m", "array_api_backends"]
        # the cell's timeout bounds the whole worker; a hung pytest is killed with it
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if not report.is_file():
            rc = proc.returncode
            how = f"died of signal {-rc}" if rc < 0 else f"exited {rc}"
            fatal = [ln for ln in proc.stderr.splitlines() if ln.startswith("Fatal Python error")]
            tail = fatal[:1] or (proc.stdout + proc.stderr).strip().splitlines()[-2:]
            raise RuntimeError(f"SciPy's pytest {how}: {' | '.join(tail)}")
        return _junit(report)


def _junit(path: Path) -> tuple[dict[str, int], list[str], str]:
    """Counts per outcome, each failing test (its class and name) with its message's
    first line, and how many tests the harness skipped and why (``_scipy_patch``: a
    call outside the candidate's ``fn(x, axis)``)."""
    from ._scipy_patch import SKIP_PREFIX

    counts = {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0}
    failures = []
    ours: dict[str, int] = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        tags = {c.tag: c for c in tc}
        bad = tags.get("failure", tags.get("error"))
        name = f"{tc.attrib.get('classname', '').rpartition('.')[2]}::{tc.attrib.get('name')}"
        if bad is not None:
            msg = (bad.attrib.get("message") or "").strip().splitlines()
            counts["failed"] += 1
            failures.append(f"{name}: {(msg or ['failed'])[0][:160]}")
        elif "skipped" in tags:
            kind = "xfailed" if tags["skipped"].attrib.get("type") == "pytest.xfail" else "skipped"
            counts[kind] += 1
            why = tags["skipped"].attrib.get("message") or ""
            if SKIP_PREFIX in why:
                why = why[why.index(SKIP_PREFIX) + len(SKIP_PREFIX) :].strip()
                ours[why] = ours.get(why, 0) + 1
        else:
            counts["passed"] += 1
    skips = "; ".join(f"{n} ({why})" for why, n in sorted(ours.items()))
    return counts, failures, skips

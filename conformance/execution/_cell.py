"""One cell: a candidate on a backend, a dtype and a family, and its execution half.

A cell is run in two halves. :func:`execute` calls the candidate on every input of the
family (in the candidate's worker process) and keeps only validated data (:class:`Raw`);
``scoring._score.score`` judges that data against the oracle (in the process that
supervises the workers, where no candidate code runs). The result is one flat record
(:data:`COLUMNS`), a row of the results table. Everything the candidate does wrong is a
finding, never an exception out of here: raising is ``error``; a return that is not an
array, a wrong dtype, shape, namespace or device, a modified input or a changed
floating-point environment is a finding that the score turns into ``fail``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from ..backends import _fpenv
from ..backends._backends import Backend
from ..backends._invoke import Encoded, encode, invoke
from ..functions._candidates import Candidate
from ..functions._families import Case, Family
from . import _limits

__all__ = ["COLUMNS", "STATUSES", "CellSpec", "Raw", "execute", "failed", "load_error", "not_run"]

COLUMNS = [
    "function", "candidate", "backend", "library", "device", "mode", "fpenv", "dtype", "out_dtype",
    "family",
    "profile", "n_inputs", "n_elements", "max_ulp", "p99_ulp", "median_ulp", "mean_ulp",
    "frac_correctly_rounded", "max_abs_err_eps", "special_mismatches", "semantics",
    "status", "reason", "worst_where", "worst_input", "worst_expected", "worst_got",
    "worst_ulp", "curve", "hist", "seconds", "platform", "notes", "judge", "host", "counts",
]  # fmt: skip
STATUSES = ("pass", "fail", "error", "not run")


@dataclass(frozen=True)
class CellSpec:
    candidate: Candidate
    backend: Backend
    dtype: str
    family: Family
    profile: str
    # the floating-point environment its calls run in (_fpenv.FPENVS): "default", or
    # "ftz" (flush-to-zero, denormals-are-zero), whose cells' keys end in "|ftz"
    fpenv: str = "default"

    @property
    def function(self) -> str:
        return self.candidate.function

    @property
    def key(self) -> str:
        parts = [self.candidate.uid, self.backend.name, self.dtype, self.family.name, self.profile]
        return "|".join(parts + ([self.fpenv] if self.fpenv != "default" else []))

    @property
    def unit(self) -> tuple[str, str, str]:
        """What its inputs depend on: (family, dtype, the function where the family's
        inputs depend on it, else "")."""
        fn = self.function if self.family.per_function else ""
        return (self.family.name, self.dtype, fn)

    def cases(self) -> list[Case]:
        return self.family.cases(self.dtype, self.profile, self.function)

    def base_record(self) -> dict[str, Any]:
        b = self.backend
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(
            function=self.function, candidate=self.candidate.name, backend=b.name,
            library=b.library, device=b.device, mode=b.mode + ("" if b.x64 else ":nox64"),
            fpenv=self.fpenv,
            dtype=self.dtype, family=self.family.name,
            profile=self.profile, n_inputs=0, n_elements=0, special_mismatches=0,
            semantics="{}", curve="[]", hist="[]", reason="", platform="", notes="", judge="",
            host="", counts="{}",
        )  # fmt: skip
        return rec


@dataclass
class Raw:
    """What a worker sends back for one cell: the outputs as plain arrays (None where
    there was nothing to score), the findings, and the error that stopped the cell."""

    outputs: list[Encoded | None] = field(default_factory=list)
    # one per output where a case asked for return_sign (None where it did not, or
    # where no sign came back); empty where no case of the cell asked for one
    signs: list[Encoded | None] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    host: str = ""  # where it was measured
    # a streamed family's record fields, from the supervisor's scoring processes
    summary: dict[str, Any] | None = None


def not_run(spec: CellSpec, reason: str) -> dict[str, Any]:
    rec = spec.base_record()
    rec.update(status="not run", reason=reason, seconds=0.0)
    return rec


def failed(spec: CellSpec, reason: str, seconds: float = 0.0) -> dict[str, Any]:
    """The record of a cell that produced nothing to score (``error``)."""
    rec = spec.base_record()
    rec.update(status="error", reason=reason, seconds=seconds)
    return rec


def _message(exc: BaseException) -> str:
    """One line for an exception a candidate raised, whatever its __str__ does (a
    MemoryError under the worker's limit says so first)"""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) and _limits.memory_limit():
        name = f"memory limit ({_limits.memory_limit() / 2**30:.3g} GiB): {name}"
    try:
        if isinstance(exc, SyntaxError) and exc.filename:
            text = f"{name}: {exc.msg} ({exc.filename}, line {exc.lineno})"
        else:
            text = f"{name}: {exc}".strip()
    except BaseException as inner:  # a __str__ that raises (or exits)
        text = f"{name} (its message raised {type(inner).__name__})"
    return (text.splitlines() or [name])[0][:300]


def execute(
    spec: CellSpec, fn: Callable[..., Any],
    emit: Callable[[int, Encoded | None], None] | None = None,
) -> Raw:  # fmt: skip
    """Call ``fn`` on every input of the cell; never raises for what fn does. A streamed
    family's answers go to ``emit(block, answer)`` as they come (the worker sends them
    on), or into ``outputs`` where there is no ``emit``."""
    t0 = time.perf_counter()
    raw = Raw(host=socket.gethostname())
    with _fpenv.environment(spec.fpenv):  # the calls' environment; restored after
        _calls(spec, fn, emit, raw)
    raw.seconds = time.perf_counter() - t0
    return raw


def _calls(
    spec: CellSpec, fn: Callable[..., Any], emit: Callable[[int, Encoded | None], None] | None,
    raw: Raw,
) -> None:  # fmt: skip
    stream = spec.family.stream
    if stream is not None:
        for i in range(stream.n_blocks):
            try:
                got = invoke(fn, spec.backend, Case(stream.inputs(i), -1, stream.label),
                             raw.findings)  # fmt: skip
            except (Exception, SystemExit) as exc:
                raw.error = f"raised on {stream.label}, block {i}: {_message(exc)}"
                break
            enc = None if got is None else encode(got)
            if emit is None:
                raw.outputs.append(enc)
            else:
                emit(i, enc)
        return
    cases = [] if spec.family.suite else spec.cases()
    for case in cases:
        sign: list[NDArray[Any] | None] = []
        try:
            got = invoke(fn, spec.backend, case, raw.findings, sign)
        except (Exception, SystemExit) as exc:
            raw.error = f"raised on {case.label}: {_message(exc)}"
            break
        raw.outputs.append(None if got is None else encode(got))
        raw.signs.append(encode(sign[0]) if sign and sign[0] is not None else None)
    if not any(c.return_sign for c in cases):
        raw.signs = []
    if spec.family.check is not None and raw.error is None:
        try:
            with _fpenv.guarded(raw.findings):  # its calls are the candidate's too
                findings, notes = spec.family.check(spec, fn, cases)
            raw.findings += findings
            raw.notes += notes
        except Exception as exc:
            raw.error = f"the {spec.family.name} check raised: {_message(exc)}"


def load_error(spec: CellSpec, exc: BaseException) -> str:
    return f"cannot load {spec.candidate.target}: {_message(exc)}"

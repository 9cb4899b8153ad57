"""The pytest plugin (registered through the ``pytest11`` entry point): options that
choose the cells of the conformance suite, the parametrization of its tests, the runner
that executes them, and a report header that says what ran.

    pytest --pyargs conformance --candidate mypkg.module:log_softmax \
        [--function log_softmax|softmax|logsumexp] [--backends numpy:cpu,torch:cpu] \
        [--dtypes float32] [--families dominant] [--profile quick|full] \
        [--conformance-timeout 300] [--conformance-in-process]

Each cell runs as in ``python -m conformance run``: the candidate in a worker process of
its own (one per candidate and backend), killed at the timeout, and scored in the pytest
process, where no candidate code runs. A candidate that segfaults or hangs fails its
cells and the session goes on. ``--conformance-in-process`` calls the candidate in the
pytest process instead (no timeout), for a debugger.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CellRunner", "failure_message"]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("log-softmax-conformance", "log_softmax conformance suite")
    g.addoption(
        "--candidate",
        action="append",
        default=[],
        help="candidate to test: a built-in name (impl, scipy, ...) or module:function; "
        "repeatable (default: impl)",
    )
    g.addoption(
        "--function", default="log_softmax", choices=("log_softmax", "softmax", "logsumexp"),
        help="the function the candidates compute (default: log_softmax)",
    )  # fmt: skip
    g.addoption("--backends", default=None, help="comma-separated backend cells (default: all)")
    g.addoption("--dtypes", default=None, help="comma-separated dtypes (default: all)")
    g.addoption("--families", default=None, help="comma-separated families (default: all)")
    g.addoption("--profile", default="quick", choices=("quick", "full"), help="input sizes")
    g.addoption(
        "--fpenv", default="default",
        help="comma-separated floating-point environments the calls run in: default, ftz "
        "(flush-to-zero and denormals-are-zero); each cell once per environment",
    )  # fmt: skip
    g.addoption("--oracle-cache", default=None, help="oracle cache directory")
    g.addoption(
        "--conformance-timeout", type=float, default=300.0,
        help="seconds a cell may take in its worker before it is killed (default 300)",
    )  # fmt: skip
    g.addoption(
        "--conformance-in-process", action="store_true",
        help="call candidates in the pytest process: no isolation and no timeout (debugging)",
    )  # fmt: skip


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # `pytest --pyargs conformance --candidate ...` runs the suite, not the package's
    # own unit tests
    if config.getoption("candidate") and "tests" in collection_path.parts:
        parts = collection_path.parts
        i = len(parts) - 1 - parts[::-1].index("tests")
        if i > 0 and parts[i - 1] == "conformance":
            return True
    return None


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [s.strip() for s in value.split(",") if s.strip()]


def _specs(config: pytest.Config) -> list[Any]:
    from . import BACKENDS, DEFAULT_FAMILIES, RunConfig, backend, candidate, plan
    from .functions._families import families

    fn = config.getoption("function")
    cands = [candidate(c, fn) for c in (config.getoption("candidate") or ["impl"])]
    bnames = _split(config.getoption("backends"))
    backends = BACKENDS if bnames is None else tuple(backend(n) for n in bnames)
    fnames = _split(config.getoption("families"))
    fams = DEFAULT_FAMILIES if fnames is None else tuple(f for n in fnames for f in families(n))
    dtypes = _split(config.getoption("dtypes")) or ["float16", "bfloat16", "float32", "float64"]
    from .backends._fpenv import FPENVS

    envs = list(dict.fromkeys(_split(config.getoption("fpenv")) or ["default"]))
    for e in envs:
        if e not in FPENVS:
            raise ValueError(f"unknown --fpenv {e!r}; valid: {', '.join(FPENVS)}")
    cfg = RunConfig(cands, backends, dtypes, fams, profile=config.getoption("profile"), fpenvs=envs)
    # the runner's plan, less the dtypes a backend lacks (the sweep records those as
    # not run; here they would be tests that can only skip)
    return [s for s in plan(cfg) if s.dtype in s.backend.dtypes]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_cell" not in metafunc.fixturenames:
        return
    from .functions._expected import expected_failures

    try:
        specs = _specs(metafunc.config)
    except (KeyError, ImportError, AttributeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    known = expected_failures("budget")
    params = []
    for s in specs:
        marks = []
        e = known.get((s.candidate.uid, s.backend.name, s.dtype, s.family.name))
        if e is not None and e.applies(s.profile) and s.fpenv == "default":
            marks.append(pytest.mark.xfail(reason=e.describe(), strict=True))
        ident = f"{s.candidate.uid}-{s.backend.name}-{s.dtype}-{s.family.name}"
        ident += "" if s.fpenv == "default" else f"-{s.fpenv}"
        params.append(pytest.param(s, id=ident, marks=marks))
    metafunc.parametrize("conformance_cell", params)


@pytest.fixture(scope="session")
def conformance_cache(pytestconfig: pytest.Config) -> Any:
    from ._runner import default_cache_dir
    from .scoring._oracle_cache import OracleCache

    return OracleCache(pytestconfig.getoption("oracle_cache") or default_cache_dir())


@pytest.fixture(scope="session")
def conformance_budgets() -> Any:
    from .scoring._budgets import Budgets

    return Budgets.load()


class CellRunner:
    """Runs the suite's cells: isolated (the default) or in this process."""

    def __init__(self, config: pytest.Config, cache: Any, budgets: Any, log_dir: Path) -> None:
        self.cache, self.budgets = cache, budgets
        self.in_process = bool(config.getoption("conformance_in_process"))
        self.timeout = float(config.getoption("conformance_timeout"))
        self.log_dir = log_dir
        self.probes: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self.sup: Any = None
        self.got: dict[str, tuple[Any, Any]] = {}
        self.libraries: set[str] = set()  # of the session's cells, for the fork server

    def why_not(self, spec: Any) -> str | None:
        """None when the cell's backend and family can run here, else why not."""
        b = spec.backend
        if b.name not in self.probes:
            if self.in_process:
                self.probes[b.name] = (b.probe(), {})
            else:
                from .execution._isolation import probe, start_server

                start_server(self.libraries)
                self.probes.update(probe([b], self.timeout, self.log_dir))
        why = self.probes[b.name][0]
        if why is None and spec.dtype not in b.dtypes:
            why = f"{b.name} has no {spec.dtype}"
        return why or spec.family.why_not()

    def run(self, spec: Any) -> dict[str, Any]:
        from .execution._cell import failed
        from .scoring._score import run_cell, score

        if self.in_process:
            return run_cell(spec, self.cache, self.budgets)
        if self.sup is None:
            from .execution._isolation import Supervisor, start_server

            start_server(self.libraries)
            self.sup = Supervisor(
                jobs=1, timeout=self.timeout, log_dir=self.log_dir,
                keep_idle=2,
                on_result=lambda s, raw, why: self.got.__setitem__(s.key, (raw, why)),
            )  # fmt: skip
        self.sup.add([spec])
        self.sup.run()
        raw, why = self.got.pop(spec.key)
        if raw is None:
            return failed(spec, why or "no result")
        return score(spec, raw, spec.cases(), self.cache.get, self.budgets, self.cache.recompute)

    def close(self) -> None:
        if self.sup is not None:
            self.sup.close()


@pytest.fixture(scope="session")
def conformance_runner(
    pytestconfig: pytest.Config, conformance_cache: Any, conformance_budgets: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CellRunner]:  # fmt: skip
    runner = CellRunner(
        pytestconfig, conformance_cache, conformance_budgets,
        tmp_path_factory.mktemp("conformance-workers"),
    )  # fmt: skip
    runner.libraries = {s.backend.library for s in _specs(pytestconfig)}
    yield runner
    runner.close()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before anything imports scipy
    given = config.getoption("candidate", None)
    if not given:
        return
    # candidates are found from where pytest was started, as `python -m conformance run`
    # finds them (plain `pytest` does not put that folder on sys.path)
    here = str(config.invocation_params.dir)
    if here not in sys.path:
        sys.path.insert(0, here)
    from .functions._candidates import candidate

    for c in given:
        try:
            candidate(c)
        except (KeyError, ImportError, ValueError) as exc:  # one line, no traceback
            raise pytest.UsageError(f"--candidate {c}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    # package metadata and the OS only: no backend is imported for a header
    from .execution._fingerprint import DISTS, _cpu, _version

    cands = config.getoption("candidate") or ["impl"]
    shown = ("numpy", "scipy", "torch", "jax", "dask", "array-api-strict", "pandas")
    versions = " ".join(f"{d}={v}" for d in DISTS if d in shown and (v := _version(d)))
    seed = config.getoption("hypothesis_seed", None)
    timeout = config.getoption("conformance_timeout")
    mode = (
        "in process (no isolation)" if config.getoption("conformance_in_process")
        else f"a worker per candidate and backend, timeout {timeout:g}s"
    )  # fmt: skip
    return [
        f"conformance: candidates={','.join(cands)} profile={config.getoption('profile')} "
        f"backends={config.getoption('backends') or 'all'}; {mode}",
        f"conformance: {versions}",
        f"conformance: cpu={_cpu()!r}",
        f"conformance: hypothesis {_hypothesis_seed(seed)}",
    ]


def _hypothesis_seed(seed: Any) -> str:
    """How Hypothesis draws here, in the words of its settings (one statement: the
    seed given, derandomized by the profile, or a fresh seed per run)."""
    import hypothesis

    profile = hypothesis.settings.get_current_profile_name()
    if seed is not None:
        return f"seed={seed} (--hypothesis-seed)"
    if hypothesis.settings().derandomize:
        return f"derandomized (profile {profile})"
    return f"a random seed each run (profile {profile}; --hypothesis-seed=N fixes one)"


def failure_message(spec: Any, rec: dict[str, Any]) -> str:
    """A failed cell as a reproducer: what failed, the worst slice, and a snippet."""
    lines = [
        f"{rec['status']}: {rec['reason']}",
        f"cell: {spec.function} candidate {spec.candidate.name!r} ({spec.candidate.target}), "
        "backend "
        f"{spec.backend.name}, {spec.dtype}, family {spec.family.name} ({spec.profile})",
    ]
    if rec.get("worst_where"):
        lines += [
            f"worst element: {rec['worst_ulp']:.6g} ULP at {rec['worst_where']}",
            f"  expected (correctly rounded) = {rec['worst_expected']!r}",
            f"  got = {rec['worst_got']!r}",
        ]
        inp = rec.get("worst_input") or ""
        if inp.startswith("["):
            hexes = json.loads(inp)
            lines += [
                f"  input slice ({spec.dtype}, hex) = {hexes}",
                "reproduce:",
                _snippet(spec, hexes),
            ]
        else:
            lines += ["reproduce:", _snippet_family(spec, rec)]
    return "\n".join(lines)


def _astype(dtype: str) -> str:
    return ".astype(ml_dtypes.bfloat16)" if dtype == "bfloat16" else f".astype({dtype!r})"


def _snippet(spec: Any, hexes: list[str]) -> str:
    from .functions._functions import scoring_code

    return "\n".join(
        [
            "    import numpy as np, ml_dtypes, reference",
            "    from conformance import backend, candidate",
            f"    x = np.array([float.fromhex(h) for h in {hexes!r}]){_astype(spec.dtype)}",
            f"    got = backend({spec.backend.name!r}).run("
            f"candidate({spec.candidate.target!r}).load(), x, axis=-1)",
            f"    print(got, {scoring_code(spec.function, 'got', 'x')})",
        ]
    )


def _snippet_family(spec: Any, rec: dict[str, Any]) -> str:
    from .functions._functions import scoring_code

    where = rec["worst_where"].split(":")[0]
    keywords = (rec.get("worst_input") or "").startswith("{")  # logsumexp's b, return_sign
    call = ", b=case.b, return_sign=case.return_sign" if keywords else ""
    got = "got[0] if case.return_sign else got" if keywords else "got"
    return "\n".join(
        [
            "    import numpy as np, reference",
            "    import conformance",
            "    from conformance import backend, candidate",
            f"    case = {where}",
            f"    got = backend({spec.backend.name!r}).run("
            f"candidate({spec.candidate.target!r}).load(), case.x, axis=case.axis{call})",
            f"    err = {scoring_code(spec.function, got, 'case.x', 'case.axis', keywords)}; "
            "print(err.max())",
        ]
    )

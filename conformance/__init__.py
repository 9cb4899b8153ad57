"""The conformance matrix: backends, input families, candidates and the runner that
sweeps them, scored by the oracle, into one results table.

    python -m conformance list
    python -m conformance run --profile quick --results results/
    python -m conformance search --candidate scipy --dtype float32 --budget 60s
    pytest --pyargs conformance --candidate mypkg.module:log_softmax
"""

from ._backends import BACKENDS, Backend, backend
from ._budgets import Budgets
from ._candidates import BUILTIN, Candidate, candidate, known_candidates
from ._cell import COLUMNS, CellSpec, run_cell
from ._corpus import load_corpus
from ._expected import ExpectedFailure, expected_failures
from ._families import DEFAULT_FAMILIES, FAMILIES, PROFILES, Case, Family, family
from ._oracle_cache import OracleCache
from ._results import ResultsError
from ._runner import PlanError, RunConfig, load_table, plan, run
from ._search import SearchResult, search

__all__ = [
    "BACKENDS",
    "BUILTIN",
    "COLUMNS",
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "PROFILES",
    "Backend",
    "Budgets",
    "Candidate",
    "Case",
    "CellSpec",
    "ExpectedFailure",
    "Family",
    "OracleCache",
    "PlanError",
    "ResultsError",
    "RunConfig",
    "SearchResult",
    "backend",
    "candidate",
    "expected_failures",
    "family",
    "known_candidates",
    "load_corpus",
    "load_table",
    "plan",
    "run",
    "run_cell",
    "search",
]

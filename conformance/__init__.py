"""The conformance matrix: backends, input families, candidates and the runner that
sweeps them, scored by the oracle, into one results table.

    python -m conformance list
    python -m conformance run --profile quick --results results/
    python -m conformance search --candidate scipy --dtype float32 --budget 60s
    pytest --pyargs conformance --candidate mypkg.module:log_softmax
"""

from ._runner import PlanError, RunConfig, load_table, plan, run
from ._search import SearchResult, search
from .backends._backends import BACKENDS, Backend, backend
from .execution._cell import COLUMNS, CellSpec
from .functions._candidates import BUILTIN, Candidate, candidate, known_candidates
from .functions._corpus import load_corpus
from .functions._expected import ExpectedFailure, expected_failures
from .functions._families import DEFAULT_FAMILIES, FAMILIES, PROFILES, Case, Family, family
from .scoring._budgets import Budgets
from .scoring._oracle_cache import OracleCache
from .scoring._results import ResultsError
from .scoring._score import run_cell

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

"""The conformance matrix: backends, input families, candidates and the runner that
sweeps them, scored by the oracle, into one results table.

    python -m conformance list
    python -m conformance run --profile quick --results results/
"""

from ._backends import BACKENDS, Backend, backend
from ._candidates import BUILTIN, Candidate, candidate, known_candidates
from ._cell import COLUMNS, Budgets, CellSpec, OracleCache, run_cell
from ._families import FAMILIES, PROFILES, Case, Family, family
from ._runner import RunConfig, load_table, plan, run

__all__ = [
    "BACKENDS",
    "BUILTIN",
    "COLUMNS",
    "FAMILIES",
    "PROFILES",
    "Backend",
    "Budgets",
    "Candidate",
    "Case",
    "CellSpec",
    "Family",
    "OracleCache",
    "RunConfig",
    "backend",
    "candidate",
    "family",
    "known_candidates",
    "load_table",
    "plan",
    "run",
    "run_cell",
]

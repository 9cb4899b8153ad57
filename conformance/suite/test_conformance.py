"""Every cell of the conformance matrix as a test: a candidate on a backend, a dtype
and an input family, scored by the oracle. The cells come from the plugin's options
(``--candidate``, ``--backends``, ``--dtypes``, ``--families``, ``--profile``;
default: ``impl`` on every backend, quick profile)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import Budgets, CellSpec, OracleCache, run_cell
from conformance._pytest_plugin import failure_message


def test_accuracy(
    conformance_cell: CellSpec, conformance_cache: OracleCache, conformance_budgets: Budgets
) -> None:
    spec = conformance_cell
    why = spec.backend.probe()
    if why:
        pytest.skip(f"{spec.backend.name}: {why}")
    if spec.dtype not in spec.backend.dtypes:
        pytest.skip(f"{spec.backend.name} has no {spec.dtype}")
    rec: dict[str, Any] = run_cell(spec, conformance_cache, conformance_budgets)
    if rec["status"] == "not run":
        pytest.skip(rec["reason"])
    if rec["status"] != "pass":
        pytest.fail(failure_message(spec, rec), pytrace=False)

"""Every cell of the conformance matrix as a test: a candidate on a backend, a dtype
and an input family, scored by the oracle. The cells come from the plugin's options
(``--candidate``, ``--backends``, ``--dtypes``, ``--families``, ``--profile``;
default: ``impl`` on every backend, quick profile)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import CellSpec
from conformance._pytest_plugin import CellRunner, failure_message


def test_accuracy(conformance_cell: CellSpec, conformance_runner: CellRunner) -> None:
    spec = conformance_cell
    why = conformance_runner.why_not(spec)
    if why:
        pytest.skip(f"{spec.backend.name}: {why}")
    rec: dict[str, Any] = conformance_runner.run(spec)
    if rec["status"] == "not run":
        pytest.skip(rec["reason"])
    if rec["status"] != "pass":
        pytest.fail(failure_message(spec, rec), pytrace=False)

"""The conformance matrix: backends, input families, candidates, runner, reports and
the regression gate.

Only the backend registry exists so far; the rest is filled in by its own issues.
"""

from ._backends import BACKENDS, Backend, backend

__all__ = ["BACKENDS", "Backend", "backend"]

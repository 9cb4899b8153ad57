"""The conformance matrix runner, reports and regression gate.

Filled in by its own issues; importable now so the distribution is whole.
"""

__all__: list[str] = []

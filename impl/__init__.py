"""The production log_softmax (array-API generic, accurate and fast).

Filled in by its own issue; importable now so the distribution is whole.
"""

__all__: list[str] = []

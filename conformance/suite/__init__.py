"""The conformance test suite: ``pytest --pyargs conformance --candidate mod:fn``."""

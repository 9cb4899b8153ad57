"""Pytest plugin: the report header says what the oracle ran on, and mpmath's
precision is checked to be left as found after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

__all__ = ["pytest_report_header"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    import ml_dtypes
    import numpy as np

    from ._engines import engine_info

    info = engine_info()
    lines = [
        f"oracle: engine={info['engine']} mpmath={info['mpmath']} "
        f"backend={info['mpmath_backend']} python-flint={info['python-flint']}",
        f"numpy={np.__version__} ml_dtypes={ml_dtypes.__version__}",
    ]
    try:
        import hypothesis

        s = hypothesis.settings()
        lines.append(
            f"hypothesis={hypothesis.__version__} profile={hypothesis.settings._current_profile} "
            f"max_examples={s.max_examples} derandomize={s.derandomize}"
        )
    except ImportError:
        pass
    return lines


@pytest.fixture(autouse=True)
def _mpmath_precision_untouched() -> Iterator[None]:
    import mpmath

    before = mpmath.mp.prec
    yield
    after = mpmath.mp.prec
    mpmath.mp.prec = before  # restore for the next test before failing this one
    assert after == before, f"a test left mpmath.mp.prec at {after} (was {before})"

"""pytest plugin of the ``scipy-suite`` family (loaded with ``-p`` in the suite's own
pytest process, never otherwise): SciPy's tests of a function with the name they call
(``log_softmax``, ``softmax`` or ``logsumexp`` in the test module, the function named
by ``CONFORMANCE_SUITE_FUNCTION``) replaced by the candidate named in the environment
(``CONFORMANCE_SUITE_TARGET``, a "module:function").

A candidate is ``fn(x, axis=None)``. SciPy's logsumexp tests also pass ``keepdims``,
``b`` and ``return_sign``: each goes to a candidate whose signature takes it; otherwise
``keepdims=True`` reshapes the candidate's answer (the reduced axes kept, length 1),
and a call with ``b`` or ``return_sign`` skips its test, with the reason (outside the
harness's contract: the cell says how many)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

SKIP_PREFIX = "conformance:"


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: it may take it
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _keep_dims(out: Any, x: Any, axis: Any) -> Any:
    """``out`` (reduced over ``axis`` of ``x``) with the reduced axes kept."""
    import numpy as np

    from reference._oracle import normalize_axis

    shape = tuple(int(n) for n in np.shape(x))
    axes = normalize_axis(axis, len(shape))
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    try:
        import array_api_compat

        xp = array_api_compat.array_namespace(out)
    except TypeError:  # a Python or NumPy scalar
        return np.reshape(np.asarray(out), kept)
    return xp.reshape(out, kept)


def logsumexp_adapter(fn: Callable[..., Any]) -> Callable[..., Any]:
    """SciPy's ``logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False)``
    made of a candidate ``fn(x, axis=None)``."""
    import pytest

    takes = {k: _takes(fn, k) for k in ("b", "keepdims", "return_sign")}

    def logsumexp(
        a: Any, axis: Any = None, b: Any = None, keepdims: bool = False,
        return_sign: bool = False,
    ) -> Any:  # fmt: skip
        extra: dict[str, Any] = {}
        for name, value, unset in (("b", b, None), ("return_sign", return_sign, False)):
            if value is unset:
                continue
            if not takes[name]:
                pytest.skip(f"{SKIP_PREFIX} the candidate is fn(x, axis) and takes no {name}=")
            extra[name] = value
        if keepdims and takes["keepdims"]:
            extra["keepdims"] = True
        out = fn(a, axis=axis, **extra)
        if keepdims and not takes["keepdims"]:
            return _keep_dims(out, a, axis)
        return out

    return logsumexp


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    from ._candidates import load_target

    fn = load_target(os.environ["CONFORMANCE_SUITE_TARGET"])
    name = os.environ.get("CONFORMANCE_SUITE_FUNCTION", "log_softmax")
    if name == "logsumexp":
        fn = logsumexp_adapter(fn)
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, name):
            setattr(module, name, fn)

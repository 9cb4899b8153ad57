"""logsumexp candidates with weight and sign defects, for the tests (importable by
workers). Each starts from impl's correctly rounded answer and breaks one thing, as a
released library did: SciPy 1.15.2's NaN where the maximum's weight is negative
(scipy/scipy#22903), SciPy 1.15.0's sign 1 for an empty sum and 1.16.0's NaN sign for
+inf (scipy/scipy#23548)."""

from __future__ import annotations

from typing import Any

import numpy as np

import impl

__all__ = [
    "cancels_in_float64",
    "ignores_weights",
    "modifies_weights",
    "nan_at_negative_max_weight",
    "no_sign",
    "sign_always_one",
    "sign_nan_at_inf",
    "sign_one_when_empty",
]


def ignores_weights(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    return impl.logsumexp(x, axis=axis, return_sign=return_sign)


def sign_always_one(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    v = impl.logsumexp(x, axis=axis, b=b)
    return (v, np.ones_like(v)) if return_sign else v


def no_sign(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    return impl.logsumexp(x, axis=axis, b=b)


def modifies_weights(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    out = impl.logsumexp(x, axis=axis, b=b, return_sign=return_sign)
    if b is not None:
        b[...] = 0
    return out


def cancels_in_float64(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    """log|sum b exp(a - m)| + m in float64, rounded once to x's format: right to a few
    ulps unless the terms cancel (SciPy 1.14's algorithm, in NumPy)."""
    a = np.asarray(x, dtype=np.float64)
    w = np.ones_like(a) if b is None else np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        m = np.max(np.where(w != 0, a, -np.inf), axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.where(w != 0, w * np.exp(a - m), 0.0), axis=axis, keepdims=True)
        v = np.squeeze(np.log(np.abs(s)) + m, axis=axis)
        sign = np.squeeze(np.sign(s), axis=axis)
        if not return_sign:
            v = np.where(sign < 0, np.nan, v)
    out = np.asarray(v).astype(x.dtype)
    return (out, np.asarray(sign).astype(x.dtype)) if return_sign else out


def nan_at_negative_max_weight(
    x: Any, axis: Any = None, b: Any = None, return_sign: bool = False
) -> Any:
    """cancels_in_float64, and NaN for the slices whose largest a (of a non-zero
    weight) has a negative weight: SciPy 1.15.2 on scipy/scipy#22903's input."""
    out = cancels_in_float64(x, axis, b, return_sign)
    if b is None:
        return out
    a, w = np.asarray(x, np.float64), np.asarray(b, np.float64)
    live = np.where(w != 0, a, -np.inf)
    at = np.argmax(live, axis=axis, keepdims=True)
    bad = np.squeeze(np.take_along_axis(w, at, axis) < 0, axis=axis)
    v = out[0] if return_sign else out
    v = np.where(bad, np.nan, v).astype(x.dtype)
    return (v, out[1]) if return_sign else v


def sign_one_when_empty(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    """impl, with the sign 1 where log|S| is -inf (SciPy 1.15.0 on [-inf])."""
    v, s = impl.logsumexp(x, axis=axis, b=b, return_sign=True)
    s = np.where(v == -np.inf, 1.0, s).astype(s.dtype)
    return (v, s) if return_sign else impl.logsumexp(x, axis=axis, b=b)


def sign_nan_at_inf(x: Any, axis: Any = None, b: Any = None, return_sign: bool = False) -> Any:
    """impl, with a NaN sign where log|S| is +inf (SciPy 1.16.0 on [+inf],
    scipy/scipy#23548)."""
    v, s = impl.logsumexp(x, axis=axis, b=b, return_sign=True)
    s = np.where(v == np.inf, np.nan, s).astype(s.dtype)
    return (v, s) if return_sign else impl.logsumexp(x, axis=axis, b=b)

"""logsumexp of complex input (or complex weights), as ``scipy.special.logsumexp``
defines it: log S with S = sum(b exp(a)) over each slice, its imaginary part the
principal argument of S, in (-pi, pi]; with ``return_sign``, log|S| (real) and the
phase S / |S| (complex; 0 where S = 0).

This is outside the specification's correctly rounded functions: the oracle's answers
are real, so nothing here is certified (within a few ULP of the exact value, as
impl/tests/test_functions.py measures it). The terms are shifted by the slice's
largest real part m, so that exp never overflows and the largest term is exp(i Im a)
of modulus 1,

    log S = log(sum(b exp(a - m))) + m,

in complex128 where the namespace and device have it (complex64 input rounded once at
the end), and the weights of zero remove their entries (a NaN or an infinity with a
weight of zero adds nothing), as for real input. Where m is not finite (an entry whose
real part is +inf, or every real part -inf) the shift means nothing, and the result is
the unshifted formula's, with C99's complex exp and log deciding the infinities and
NaNs, as SciPy's is.

Every namespace runs the same array-API operations, so derivatives come from the
namespace itself (torch's autograd, JAX's transformations); Dask runs them on NumPy
in each block (impl/_api.py, ``_dask_complex``)."""

from __future__ import annotations

import math
from typing import Any

from ._delegation import _wide_dtype

__all__ = ["complex_logsumexp", "is_complex"]


def is_complex(xp: Any, dtype: Any) -> bool:
    try:
        return bool(xp.isdtype(dtype, "complex floating"))
    except TypeError:  # ml_dtypes' types: real or unsupported, never complex
        return False


def complex_logsumexp(
    xp: Any, a: Any, b: Any, axes: tuple[int, ...], return_sign: bool
) -> tuple[Any, Any]:
    """(value, phase) of complex a (and real or complex b of a's shape and dtype),
    the reduced axes kept with size 1; value complex, or real under ``return_sign``
    (the phase is None without it)."""
    import numpy as np

    with np.errstate(all="ignore"):  # log of a zero sum, exp of infinities: as C99 says
        return _complex(xp, a, b, axes, return_sign)


def _complex(xp: Any, a: Any, b: Any, axes: tuple[int, ...], return_sign: bool) -> tuple[Any, Any]:
    shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
    if not axes:  # slices of one entry: reduce a new last axis of size 1
        a = xp.reshape(a, (*a.shape, 1))
        b = None if b is None else xp.reshape(b, a.shape)
        axes = (a.ndim - 1,)
    out_dtype = a.dtype
    real_dtype = xp.float32 if out_dtype == xp.complex64 else xp.float64
    wide = xp.complex128 if _wide_dtype(xp, a) == xp.float64 else xp.complex64
    a = xp.astype(a, wide)
    if b is not None:
        b = xp.astype(b, wide)
        a = xp.where(b == 0, xp.full_like(a, -math.inf), a)  # a weight of zero removes a
    real = xp.real(a)
    m = xp.max(real, axis=axes, keepdims=True)
    finite = xp.isfinite(m)
    m = xp.where(finite, m, xp.zeros_like(m))  # the unshifted formula where m is not finite
    mw = xp.astype(m, wide)
    terms = xp.exp(a - mw)
    s = xp.sum(terms if b is None else b * terms, axis=axes, keepdims=True)
    if return_sign:
        r = xp.abs(s)
        value = xp.where(finite, xp.log(r) + m, xp.log(r))
        phase = xp.where(r == 0, xp.zeros_like(s), s / xp.where(r == 0, xp.ones_like(r), r))
        return (
            xp.reshape(xp.astype(value, real_dtype), shape),
            xp.reshape(xp.astype(phase, out_dtype), shape),
        )
    log_s = xp.log(s)
    value = xp.where(finite, log_s + mw, log_s)
    # the principal argument in (-pi, pi]: log's -pi (S on the negative real axis, its
    # imaginary part -0) is pi, as SciPy wraps it
    on_cut = xp.imag(value) == -math.pi
    value = xp.where(on_cut, value + xp.full_like(value, 2j * math.pi), value)
    return xp.reshape(xp.astype(value, out_dtype), shape), None

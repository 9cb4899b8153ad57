"""Direct mpmath scoring: the definition, evaluated the obvious way at high precision.

Slow and independent of the engines, the fixed-point sums, the fast rounding path and
the cached residuals: it exists to check them. Each slice is computed with mpf objects
at a fixed precision (default: four times what the format needs) without dropping any
term, and the ULP error of each computed element is evaluated in mpmath.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
from numpy.typing import NDArray

from ._formats import Format, format_of

__all__ = ["exact_values", "ulp_error_direct"]


def _slices(x: Any, axis: Any) -> tuple[NDArray[np.float64], list[int]]:
    from ._oracle import normalize_axis

    arr = np.asarray(x)
    axes = normalize_axis(axis, arr.ndim)
    kept = [i for i in range(arr.ndim) if i not in axes]
    perm = kept + list(axes)
    n = int(np.prod([arr.shape[a] for a in axes], dtype=np.int64))
    with np.errstate(invalid="ignore"):  # signalling NaN patterns widen quietly
        wide = arr.astype(np.float64)
    X = np.transpose(wide, perm).reshape(-1, n) if arr.size else np.zeros((0, 0))
    return X, perm


def exact_values(row: NDArray[np.float64], prec: int) -> list[Any]:
    """log_softmax of one all-finite row as mpf values at ``prec`` bits."""
    with mpmath.workprec(prec):
        xs = [mpmath.mpf(float(v)) for v in row]
        imax = max(range(len(xs)), key=lambda i: xs[i])
        m = xs[imax]
        d = [mpmath.fsub(v, m, exact=True) for v in xs]
        T = mpmath.fsum(mpmath.exp(dj) for j, dj in enumerate(d) if j != imax)
        # log1p at this precision; for T far below 2**-prec, log1p(T) = T to prec bits.
        L = T if T < mpmath.ldexp(1, -2 * prec) else mpmath.log1p(T)
        # Round d - L toward -inf: when L > 0 is far below d's last bit, the result
        # stays strictly below d, so a d that is a midpoint of the target format still
        # rounds the right way.
        return [mpmath.fsub(dj, L, rounding="f") for dj in d]


def _ulp_exp(y: Any, fmt: Format) -> int:
    if y == 0:
        return fmt.qmin
    return fmt.quantum_exponent(int(mpmath.floor(mpmath.log(abs(y), 2))))


def ulp_error_direct(
    computed: Any, x: Any, axis: Any = None, *, prec: int | None = None
) -> NDArray[np.float64]:
    """ULP error of ``computed`` against log_softmax(x) computed directly in mpmath.

    Only for slices of finite values (special values are the scorer's business, with
    their own tests). ``prec`` defaults to 4 * (precision of the format + 64) bits.
    """
    c_arr = np.asarray(computed)
    fmt = format_of(c_arr.dtype)
    prec = prec or 4 * (fmt.precision + 64)
    X, perm = _slices(x, axis)
    if not np.isfinite(X).all():
        raise ValueError("ulp_error_direct handles finite input only")
    with np.errstate(invalid="ignore"):  # signalling NaN patterns widen quietly
        C = np.transpose(c_arr.astype(np.float64), perm).reshape(X.shape)
    E = np.empty(X.shape)
    with mpmath.workprec(prec):
        for r in range(X.shape[0]):
            ys = exact_values(X[r], prec)
            for j, y in enumerate(ys):
                c = C[r, j]
                if not np.isfinite(c):
                    E[r, j] = np.inf
                    continue
                # overflow of RN(y) to -inf: a finite c is then a special mismatch
                if abs(y) >= mpmath.ldexp((1 << (fmt.precision + 1)) - 1, fmt.emax - fmt.precision):
                    E[r, j] = np.inf
                    continue
                e = abs(mpmath.mpf(c) - y) / mpmath.ldexp(1, _ulp_exp(y, fmt))
                E[r, j] = float(e)
    shape = [np.asarray(x).shape[p] for p in perm]
    return np.transpose(E.reshape(shape), np.argsort(perm))

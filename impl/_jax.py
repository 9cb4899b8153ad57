"""JAX path, compiled with ``jax.jit`` once per (axes, slice size, working dtype, x64
flag). Eagerly, JAX would otherwise dispatch (and compile) each of the algorithm's few
dozen operations on its own; under an outer ``jax.jit`` the inner one is inlined into
the caller's program.

On CPU, float32 and float64 input runs the compiled row kernels of the NumPy path
(impl/_kernel.c) as an XLA FFI custom call, chosen per platform when the program is
lowered (``lax.platform_dependent``): float64 arithmetic inside the kernel, with or
without x64, and no float64 work in XLA, whose CPU float64 ``exp`` and reductions cost
3 to 5 ns an element here. Rows the kernel declines (a NaN or a +inf in them, or -inf
only) get their special values in the handler itself, so the call is the whole program
(a branch after it cost a copy of the output). float16 and bfloat16, with x64 or
without, take the kernels too: widened exactly to float32, the kernels' correctly
rounded-to-odd float32 result, then rounded to nearest in the narrow format, which is
one correct rounding. Elsewhere (GPU, no compiled kernel) the generic algorithm runs
in XLA.

Derivatives of every path come from one custom JVP, log_softmax's own: dx -
sum(softmax(x) dx) over each slice, from the output. The algorithm is never
differentiated itself: its roundings would give zero derivatives, and its masks the
wrong gradient at -inf entries.

XLA's algebraic simplifier rewrites (A + C) - C as A for a floating-point constant C,
which erases the error term of an error-free transformation with a constant in it; the
generic algorithm's constants of that kind pass through an optimization barrier.

XLA on CPU flushes subnormal results to zero, the conversion from float64 to a
narrower format included: a float32 output of -3.3e-39 would come back as -0.0 (2.4e6
ULP). Where the work is in float64, the narrow result's subnormal range is built from
its bits instead: the value scaled to the subnormal grid (exact in float64), rounded to
an integer, and bit-cast, which no flush touches."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._generic import log_softmax_generic

__all__ = ["log_softmax_jax"]


_FFI_TARGET = "impl_log_softmax"


def log_softmax_jax(xp: Any, x: Any, axes: tuple[int, ...], n: int, wide: Any) -> Any:
    import jax

    name = "float64" if wide == xp.float64 else "float32"
    x64 = bool(jax.config.read("jax_enable_x64"))
    return _compiled(axes, n, name, x64, cpu_kernel_registered())(x)


@functools.lru_cache(maxsize=1)
def cpu_kernel_registered() -> bool:
    """Whether the row kernels are registered as an XLA FFI target for CPU (they
    are wherever impl/_kernel.c was built and this jaxlib accepts the handler)."""
    from ._numpy import compiled_kernels

    kernel = compiled_kernels()
    if kernel is None:
        return False
    import jax

    try:
        jax.ffi.register_ffi_target(_FFI_TARGET, kernel.ffi_handler(), platform="cpu")
    except Exception:  # an older or newer jaxlib without this FFI: the generic path
        return False
    from ._threads import _tell_kernels, min_per_thread

    min_per_thread()  # measured now: the handler's calls never ask Python
    _tell_kernels()  # the handler's calls share their rows among as many threads
    return True


@functools.lru_cache(maxsize=256)
def _compiled(
    axes: tuple[int, ...], n: int, wide: str, x64: bool, kernels: bool
) -> Callable[[Any], Any]:
    """``kernels``: whether CPU devices run the row kernels (an argument, so that the
    cache keeps the two programs apart)."""
    import array_api_compat
    import jax
    import jax.numpy as jnp
    from jax import lax

    def generic(x: Any, axes: tuple[int, ...] = axes) -> Any:
        xp = array_api_compat.array_namespace(x)
        working = getattr(jnp, wide)
        fix = _host_fix(x, axes)
        if wide == "float32" and x.dtype == jnp.bfloat16:
            # bfloat16's subnormals lie below float32's normal range, which flushes:
            # float32's precise core (its subnormal T built from bits), then the
            # bits rounded to bfloat16 with integer arithmetic
            cast: Callable[[Any, Any], Any] | None = _to_bfloat16
        else:
            cast = _subnormal_safe_cast if wide == "float64" else None
        return log_softmax_generic(
            xp, x, axes, n, working, cast, _subnormal_safe_scale2, _opaque, fix
        )

    def narrow_on_kernel(x: Any) -> Any:
        # float16/bfloat16 (with or without x64): widened exactly to float32, the
        # kernels' correctly rounded-to-odd float32 result, then rounded to nearest in
        # x's format: with 13 or more bits to spare, that is one correct rounding
        out = _kernel_rows(axes, n, odd=True)(x.astype(jnp.float32))
        return _round_to_bfloat16(out) if x.dtype == jnp.bfloat16 else out.astype(x.dtype)

    @jax.custom_jvp
    def f(x: Any) -> Any:
        if x.ndim > 0 and n > 1 and kernels:
            if x.dtype in (jnp.float32, jnp.float64):
                return lax.platform_dependent(x, cpu=_kernel_rows(axes, n), default=generic)
            if x.dtype in (jnp.float16, jnp.bfloat16):
                return lax.platform_dependent(x, cpu=narrow_on_kernel, default=generic)
        return generic(x)

    @f.defjvp
    def _jvp(primals: Any, tangents: Any) -> Any:
        # d log_softmax(x) = dx - sum(softmax(x) dx) over each slice, from the output
        # (in float32 at least): differentiating the algorithm itself would go through
        # its roundings (zero derivatives) and its masks (-inf entries)
        out = f(primals[0])
        t = tangents[0]
        w = jnp.promote_types(out.dtype, jnp.float32)
        tw = t.astype(w)
        dot = jnp.sum(jnp.exp(out.astype(w)) * tw, axis=axes, keepdims=True)
        return out, (tw - dot).astype(t.dtype)

    return jax.jit(f)


def _kernel_rows(axes: tuple[int, ...], n: int, odd: bool = False) -> Callable[[Any], Any]:
    """log_softmax by the row kernels: the slices as the rows of a 2-D array (XLA
    copies only where the reduced axes are not last already). The handler fills the
    rows the kernels decline (a NaN or a +inf, or -inf only) with their special
    values itself, so the call has one result and no branch after it. ``odd``
    (float32 rows): the result rounded to odd, for a caller that rounds it again."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def on_rows(rows: Any) -> Any:
        dtype = jnp.uint32 if odd else rows.dtype
        out = jax.ffi.ffi_call(
            _FFI_TARGET, jax.ShapeDtypeStruct(rows.shape, dtype), vmap_method="broadcast_all"
        )(rows)
        return lax.bitcast_convert_type(out, jnp.float32) if odd else out

    def run(x: Any) -> Any:
        kept = [i for i in range(x.ndim) if i not in axes]
        perm = kept + list(axes)
        out = on_rows(jnp.transpose(x, perm).reshape(-1, n))
        shaped = out.reshape([x.shape[p] for p in perm])
        return jnp.transpose(shaped, [perm.index(i) for i in range(x.ndim)])

    return run


def _to_bfloat16(v: Any, dtype: Any) -> Any:
    return _round_to_bfloat16(v)


def _host_fix(x: Any, axes: tuple[int, ...]) -> Callable[[Any, Any], Any] | None:
    """The generic algorithm's fix for the outputs its rounding test leaves open
    (impl/_host.py): the host's row kernels on the whole input (``fix_on_host``);
    nothing where the host has no kernels."""
    from ._host import host_log_softmax
    from ._numpy import compiled_kernels

    if compiled_kernels() is None:
        return None
    return fix_on_host(lambda xh: host_log_softmax(xh, axes), x)


def fix_on_host(
    decide: Callable[..., Any], x: Any, with_result: bool = False
) -> Callable[[Any, Any], Any]:
    """A fix for the generic algorithm under ``jax.jit`` (log_softmax's here,
    softmax's and logsumexp's in impl/_api.py): under a ``lax.cond`` on whether any
    output is open, ``decide`` on the host (``on_host``) of x, or with
    ``with_result`` of x, the result and the open mask, returns the result in x's
    format, whose open outputs are taken."""
    import jax
    import jax.numpy as jnp

    def counted(*hosts: Any) -> Any:
        from . import _host

        _host.fixes += 1
        return decide(*hosts)

    def fix(out: Any, open_: Any) -> Any:
        spec = jax.ShapeDtypeStruct(out.shape, out.dtype)
        args = (x, out, open_) if with_result else (x,)

        def decided(_: Any) -> Any:
            return jnp.where(open_, on_host(counted, spec, *args), out)

        return jax.lax.cond(jnp.any(open_), decided, lambda _: out, None)

    return fix


def on_host(fn: Callable[..., Any], result: Any, *args: Any) -> Any:
    """``fn`` of the JAX arrays ``args`` on the host, as NumPy arrays, through
    ``jax.pure_callback``: ``result`` is the ShapeDtypeStruct of what fn returns, or a
    tuple of them for a tuple of arrays, which come back in those dtypes. float64
    crosses as pairs of uint32 words, both ways: the callback runs on a thread of
    XLA's where a caller's ``jax.enable_x64`` context does not hold, and there a
    float64 array would be taken for float32."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    several = isinstance(result, tuple)
    specs = result if several else (result,)
    wide_in = [a.dtype == jnp.float64 for a in args]
    wide_out = [s.dtype == jnp.float64 for s in specs]

    def call(*hosts: Any) -> Any:
        xs = [
            np.ascontiguousarray(h).view(np.float64)[..., 0] if w else np.asarray(h)
            for h, w in zip(hosts, wide_in, strict=True)
        ]
        got = fn(*xs)
        # (reshape, not ascontiguousarray: that would make a 0-d result 1-d)
        sent = tuple(
            np.asarray(r, dtype=np.float64).reshape(*s.shape, 1).copy().view(np.uint32)
            if w
            else np.asarray(r, dtype=s.dtype)
            for r, s, w in zip(got if several else (got,), specs, wide_out, strict=True)
        )
        return sent if several else sent[0]

    words = tuple(
        jax.ShapeDtypeStruct((*s.shape, 2), jnp.uint32) if w else s
        for s, w in zip(specs, wide_out, strict=True)
    )
    sent = [
        jax.lax.bitcast_convert_type(a, jnp.uint32) if w else a
        for a, w in zip(args, wide_in, strict=True)
    ]
    got = jax.pure_callback(call, words if several else words[0], *sent, vmap_method="sequential")
    back = tuple(
        jax.lax.bitcast_convert_type(o, jnp.float64) if w else o
        for o, w in zip(got if several else (got,), wide_out, strict=True)
    )
    return back if several else back[0]


def _opaque(a: Any) -> Any:
    """a, behind an optimization barrier: XLA's algebraic simplifier folds (A + C) - C
    into A for floating-point constants C, and error-free transformations with a
    constant in them would lose their error term."""
    from jax import lax

    return lax.optimization_barrier(a)


# (precision, emin, unsigned integer of the same width)
_NARROW = {"float64": (53, -1022, "uint64"), "float32": (24, -126, "uint32"),
           "float16": (11, -14, "uint16"), "bfloat16": (8, -126, "uint16")}  # fmt: skip


def _from_bits(v: Any, m: Any, dtype: Any, uint: str) -> Any:
    """The value with integer significand ``m`` on the subnormal grid and v's sign,
    made by a bit cast (no arithmetic result, so no flush)."""
    import jax.numpy as jnp
    from jax import lax

    top = jnp.asarray(1 << (8 * jnp.dtype(uint).itemsize - 1), uint)
    sign = jnp.where(jnp.signbit(v), top, jnp.asarray(0, uint))
    return lax.bitcast_convert_type(m.astype(uint) | sign, dtype)


def _subnormal_safe_scale2(v: Any, e: Any) -> Any:
    """v * 2**e rounded once in v's dtype, also where the result is subnormal."""
    import jax.numpy as jnp

    p, emin, uint = _NARROW[jnp.dtype(v.dtype).name]
    qmin = emin - p + 1
    # ldexp, not exp2: XLA computes 2**e as exp(e ln 2), 76 ULP off at e = -1000
    ei = e.astype(jnp.int32)
    prod = jnp.ldexp(v, ei)  # right in the normal range
    # |v| * 2**(e - qmin) is exact (a power-of-two scaling into the normal range)
    m = jnp.rint(jnp.ldexp(jnp.abs(v), jnp.minimum(ei - qmin, 1000)))
    return jnp.where(jnp.abs(prod) < 2.0**emin, _from_bits(v, m, v.dtype, uint), prod)


def _subnormal_safe_cast(v: Any, dtype: Any) -> Any:
    """float64 ``v`` rounded to the narrow ``dtype``, subnormal results included."""
    import jax.numpy as jnp

    name = jnp.dtype(dtype).name
    if name not in _NARROW or name == "float64":
        return v.astype(dtype)
    p, emin, uint = _NARROW[name]
    qmin = emin - p + 1  # exponent of the smallest subnormal
    if name == "float32":
        rounded = v.astype(dtype)  # right in the normal range
    else:
        # XLA converts float64 to float16 and bfloat16 through float32, rounding
        # twice (1 + 2**-11 + 2**-40 gives 1.0 in float16). v rounded to p bits in
        # float64 first (frexp and ldexp are exact, rint rounds half to even), so the
        # conversion has nothing left to round; past the largest finite value the
        # rounded 2**(emax+1) converts to inf, as it should.
        mant, ex = jnp.frexp(v)
        rounded = jnp.ldexp(jnp.rint(jnp.ldexp(mant, p)), ex - p).astype(dtype)
    mag = jnp.abs(v)
    # |v| * 2**-qmin is exact in float64; rint rounds half to even, as the cast would.
    # 2**(p-1) comes out as the smallest normal number's pattern, also right.
    m = jnp.rint(mag * (2.0**-qmin))
    return jnp.where(mag < 2.0**emin, _from_bits(v, m, dtype, uint), rounded)


def _round_to_bfloat16(v: Any) -> Any:
    """float32 to bfloat16, round to nearest even, on the bit patterns (subnormal
    float32 values included; infinities and NaN stay what they are)."""
    import jax.numpy as jnp
    from jax import lax

    u = lax.bitcast_convert_type(v, jnp.uint32)
    r = (u + jnp.uint32(0x7FFF) + ((u >> 16) & jnp.uint32(1))) >> 16
    r = jnp.where(jnp.isnan(v), (u >> 16) | jnp.uint32(0x40), r)  # NaN stays NaN
    return lax.bitcast_convert_type(r.astype(jnp.uint16), jnp.bfloat16)

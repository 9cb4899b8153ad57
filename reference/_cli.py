"""``python -m reference "[0, -40]" --dtype float64``: the correctly rounded answer
(``--function softmax`` or ``logsumexp`` for the other two functions)."""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._engines import engine_info
from ._formats import FORMATS, format_of
from ._logsumexp import evaluate_logsumexp
from ._oracle import evaluate
from ._result import OracleResult
from ._softmax import evaluate_softmax

__all__ = ["main", "parse_array"]

_NAMES = {"inf": math.inf, "nan": math.nan, "Infinity": math.inf, "NaN": math.nan}


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _literal(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        s = node.value.strip()
        return float.fromhex(s) if "0x" in s.lower() else float(s)
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    raise ValueError(f"not a number: {ast.unparse(node)!r}")


def parse_array(text: str) -> list[Any]:
    """A nested list of numbers; ``inf``, ``nan`` and hex floats as strings
    (``"0x1p-3"``) are accepted."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {text!r} as a list of numbers") from exc
    value = _literal(tree.body)
    return value if isinstance(value, list) else [value]


def _hex(v: float, precision: int = 53) -> str:
    """v in hex with as many fraction digits as its format has (float32: 6)."""
    if not math.isfinite(v):
        return repr(v)
    mant, exp = v.hex().split("p")
    digits = -(-(precision - 1) // 4)
    head, _, frac = mant.partition(".")
    return f"{head}.{frac[:digits]}p{exp}"


def _shortest(v: float, dtype: np.dtype[Any]) -> str:
    """The shortest decimal that reads back as v in its format."""
    return repr(v) if dtype == np.float64 else str(np.asarray(v).astype(dtype)[()])


def _residual(r: float) -> str:
    if math.isnan(r):
        return ""
    return f"{r:+.6f}" if r == 0 or abs(r) >= 5e-7 else f"{r:+.2e}"


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the CLI reference of the docs is its help)."""
    p = argparse.ArgumentParser(
        prog="python -m reference",
        description="Correctly rounded log_softmax (or softmax, or logsumexp) of the given "
        "values (round to nearest even, subnormals, overflow), with the exact residual in "
        "ULPs.",
    )
    p.add_argument("--function", default="log_softmax",
                   choices=["log_softmax", "softmax", "logsumexp"],
                   help="the function (default: log_softmax)")  # fmt: skip
    p.add_argument("values", help='a list such as "[0, -40]"; inf, nan and "0x1p-3" allowed')
    p.add_argument("--dtype", default="float64", choices=sorted(FORMATS),
                   help="the format of the input and the answer (default: float64)")  # fmt: skip
    p.add_argument("--axis", default=None, type=int, help="reduced axis (default: all)")
    p.add_argument("--b", default=None, metavar="WEIGHTS",
                   help="logsumexp's weights, a list like the values (default: none)")  # fmt: skip
    p.add_argument("--engine", default="auto", choices=["auto", "arb", "mpmath"],
                   help="the exact engine (default: auto: Arb with python-flint)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fmt = format_of(args.dtype)
    try:
        raw = np.asarray(parse_array(args.values), dtype=np.float64)
        x = raw.astype(fmt.dtype)
        if args.b is not None and args.function != "logsumexp":
            raise ValueError("--b is logsumexp's weights; add --function logsumexp")
        res: OracleResult
        if args.function == "logsumexp":
            b = None if args.b is None else np.asarray(parse_array(args.b), dtype=fmt.dtype)
            res = evaluate_logsumexp(x, args.axis, b, return_sign=True, engine=args.engine)
        elif args.function == "softmax":
            res = evaluate_softmax(x, args.axis, engine=args.engine)
        else:
            res = evaluate(x, args.axis, engine=args.engine)
    except (ValueError, TypeError, np.exceptions.AxisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not np.array_equal(x.astype(np.float64), raw, equal_nan=True):
        print(f"note: input rounded to {fmt.name}", file=sys.stderr)
    info = engine_info(args.engine)
    print(
        f"{args.function}, axis={args.axis}, correctly rounded to {fmt.name} "
        f"(engine {info['engine']}, mpmath {info['mpmath']} [{info['mpmath_backend']}])"
    )
    if args.function == "logsumexp":
        return _print_reduced(res, fmt)
    xs = x.astype(np.float64).reshape(-1).tolist()
    ys = res.expected.astype(np.float64).reshape(-1).tolist()
    rs = res.residual.reshape(-1).tolist()
    print(f"{'index':>8}  {'input':<24} {'result':<25} {'hex':<25} (y - result)/ulp")
    for i, idx in enumerate(np.ndindex(*x.shape) if x.ndim else [()]):
        xt, yt = _shortest(xs[i], fmt.dtype), _shortest(ys[i], fmt.dtype)
        yh = _hex(ys[i], fmt.precision)
        print(f"{idx!s:>8}  {xt:<24} {yt:<25} {yh:<25} {_residual(rs[i])}")
    for sp in res.special_slices:
        alts = ", ".join(a.semantics for a in sp.answers[1:])
        if alts:
            print(f"special slice ({sp.case}): also accepted: {alts}")
    print(f"result = {res.expected.astype(np.float64).tolist()!r}")
    return 0


def _print_reduced(res: Any, fmt: Any) -> int:
    """logsumexp's table: one line per output, with the sign of the sum."""
    ys = res.expected.astype(np.float64).reshape(-1).tolist()
    rs = res.residual.reshape(-1).tolist()
    sg = res.sign.astype(np.float64).reshape(-1).tolist()
    print(f"{'index':>8}  {'result (log|S|)':<25} {'hex':<25} {'(y - result)/ulp':<17} sign of S")
    shape = res.expected.shape
    for i, idx in enumerate(np.ndindex(*shape) if shape else [()]):
        yt, yh = _shortest(ys[i], fmt.dtype), _hex(ys[i], fmt.precision)
        print(f"{idx!s:>8}  {yt:<25} {yh:<25} {_residual(rs[i]):<17} {sg[i]:+g}")
    print(f"result = {res.expected.astype(np.float64).tolist()!r}")
    return 0

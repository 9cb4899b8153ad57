"""impl.log_softmax against the oracle on small adversarial rows, on every backend cell
installed here (cells that cannot run are skipped with the reason)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import impl
import reference
from conformance import BACKENDS, Backend
from conformance.functions._expected import expected_failures
from reference import FORMATS
from reference.tests._corpus import rows

# Max ULP error allowed (the targets). "narrow-wide": float16/bfloat16/float32 where
# the device has float64; "narrow-native": float32 is the widest the cell has.
BUDGET = {"narrow-wide": 0.501, "narrow-native": 1.0, "float64-numpy": 1.0, "float64": 2.0}
# Known misses of these targets: conformance/data/expected_failures.toml, scope
# "impl-targets" (strict xfails: an entry that starts passing is reported).
XFAIL = {k: e.describe() for k, e in expected_failures("impl-targets").items()}


def _budget(b: Backend, dtype: str) -> float:
    if dtype == "float64":
        return BUDGET["float64-numpy"] if b.library == "numpy" else BUDGET["float64"]
    native = (b.library == "jax" and not b.x64) or b.device == "no_float64"
    return BUDGET["narrow-native"] if native and dtype == "float32" else BUDGET["narrow-wide"]


_ORACLE: dict[bytes, reference.OracleResult] = {}


def _oracle(x: np.ndarray) -> reference.OracleResult:
    key = x.dtype.str.encode() + str(x.shape).encode() + x.tobytes()
    if key not in _ORACLE:
        _ORACLE[key] = reference.evaluate(x, axis=-1)
    return _ORACLE[key]


def _family_blocks(fmt, family: str) -> list[np.ndarray]:
    """The family's rows from three seeds, stacked by length into 2-D blocks."""
    by_len: dict[int, list[np.ndarray]] = {}
    for seed in range(3):
        for label, row in rows(fmt, seed=seed, n=16):
            if label.split("-")[0] == family:
                by_len.setdefault(row.size, []).append(row)
    return [np.stack(v) for _, v in sorted(by_len.items())]


FAMILIES = [
    "normal",
    "wide",
    "dominant",
    "ties",
    "near",
    "offset",
    "saturating",
    "subnormal",
    "mixed",
    "pair",
]


def _cells() -> Iterator[Any]:
    for b in BACKENDS:
        for dtype in b.dtypes:
            for fam in FAMILIES:
                marks = []
                reason = XFAIL.get(("impl", b.name, dtype, fam))
                if reason:
                    marks.append(pytest.mark.xfail(reason=reason))
                yield pytest.param(b, dtype, fam, id=f"impl-{b.name}-{dtype}-{fam}", marks=marks)


@pytest.mark.parametrize(("b", "dtype", "family"), list(_cells()))
def test_accuracy(b: Backend, dtype: str, family: str):
    why = b.probe()
    if why:
        pytest.skip(why)
    fmt = FORMATS[dtype]
    budget = _budget(b, dtype)
    worst: tuple[float, Any] = (0.0, None)
    for block in _family_blocks(fmt, family):
        got = b.run(impl.log_softmax, block, axis=-1)
        assert got.dtype == block.dtype, f"dtype {got.dtype} for {block.dtype} input"
        res = _oracle(block)
        err = res.ulp_error(got)
        r, i = np.unravel_index(int(np.argmax(err)), err.shape)
        if err[r, i] > worst[0]:
            worst = (float(err[r, i]), (block[r], i, got[r, i], res.expected[r, i]))
    if worst[0] > budget:
        row, i, got_i, exp_i = worst[1]
        hexrow = [float(v).hex() for v in row.astype(np.float64)]
        pytest.fail(
            f"{worst[0]:.4g} ULP > {budget} at element {i}\n"
            f"input ({dtype}) = {hexrow}\nexpected = {float(exp_i)!r}\ngot = {float(got_i)!r}\n"
            f"reproduce: impl.log_softmax(np.array([float.fromhex(h) for h in {hexrow!r}])"
            f".astype('{dtype}'))"
        )

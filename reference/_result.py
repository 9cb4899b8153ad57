"""The oracle's answer for one input, and vectorized scoring of candidate outputs.

Per element the oracle keeps the correctly rounded value ``expected``, the residual
``(y - expected) / ulp(y)`` (float64, NaN where the answer is NaN or -inf) and the
exponent of ``ulp(y)``. Then for any computed c

    ulp_error = |(c - expected) / ulp(y) - residual|,

which NumPy evaluates for millions of elements a second, with no mpmath. Slices whose
answer is not unique (docs/specification.md, special values) also carry every accepted answer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._formats import Format, format_of

__all__ = ["ORACLE_VERSION", "Answer", "OracleResult", "SpecialSlice"]

# The version of what the oracle computes (its semantics and the saved layout). Stored
# with every saved result; raised whenever a change could alter a saved answer, so that
# caches keyed by input alone drop what an earlier oracle computed.
ORACLE_VERSION = 1

_FMAX = np.finfo(np.float64).max


@dataclass(frozen=True)
class Answer:
    """One accepted answer for the elements of a special slice."""

    semantics: str  # "limit", "nan-propagating", "nan-at-inf", "equal-split"
    value: NDArray[np.float64]
    residual: NDArray[np.float64]
    ulp_exp: NDArray[np.int64]


@dataclass(frozen=True)
class SpecialSlice:
    """A slice holding NaN or infinities: its flat indices in the input, which rule of
    docs/specification.md applies (``case``) and its accepted answers, canonical first."""

    case: str
    indices: NDArray[np.intp]
    answers: tuple[Answer, ...]


def _score(
    got: NDArray[np.float64],
    value: NDArray[np.float64],
    residual: NDArray[np.float64],
    ulp_exp: NDArray[Any],
) -> NDArray[np.float64]:
    with np.errstate(all="ignore"):
        special = ~np.isfinite(value) | ~np.isfinite(got)
        same = (got == value) | (np.isnan(got) & np.isnan(value))
        err = np.abs(np.ldexp(got - value, -ulp_exp.astype(np.int32)) - residual)
        # Finite errors beyond float64 range are reported as the largest float64;
        # +inf is reserved for special mismatches.
        err = np.minimum(err, _FMAX)
        return np.where(special, np.where(same, 0.0, np.inf), err)


def _matches(got: NDArray[np.float64], value: NDArray[np.float64]) -> bool:
    """Same special pattern: NaN where NaN, equal infinities, finite where finite."""
    gs, vs = ~np.isfinite(got), ~np.isfinite(value)
    if not np.array_equal(gs, vs):
        return False
    both_nan = np.isnan(got) & np.isnan(value)
    return bool(np.all(both_nan[gs] | (got[gs] == value[gs])))


@dataclass
class OracleResult:
    """Correctly rounded log_softmax of one input in one format, ready to score."""

    fmt: Format
    axis: tuple[int, ...]
    expected: NDArray[Any]  # in fmt.dtype
    residual: NDArray[np.float64]
    ulp_exp: NDArray[np.int16]
    special_slices: tuple[SpecialSlice, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.expected.shape)

    # -- scoring -----------------------------------------------------------------
    def _computed(self, computed: Any) -> NDArray[np.float64]:
        c = np.asarray(computed)
        if c.shape != self.expected.shape:
            raise ValueError(
                f"computed has shape {c.shape}, the input has shape {self.expected.shape}"
            )
        if c.dtype.kind in "biuc":
            raise TypeError(f"computed must be a real floating-point array, got dtype {c.dtype}")
        format_of(c.dtype)  # TypeError for formats the oracle has no model of
        with np.errstate(invalid="ignore"):  # signalling NaN patterns widen quietly
            return c.astype(np.float64)

    def ulp_error(self, computed: Any) -> NDArray[np.float64]:
        """ULP error of each element of ``computed`` (in this result's format)."""
        got = self._computed(computed)
        err = _score(
            got,
            self.expected.astype(np.float64),
            self.residual,
            self.ulp_exp,
        )
        flat = err.reshape(-1)
        gflat = got.reshape(-1)
        for sp in self.special_slices:
            g = gflat[sp.indices]
            ans = self._answer_for(sp, g)
            flat[sp.indices] = _score(g, ans.value, ans.residual, ans.ulp_exp)
        return err

    def _answer_for(self, sp: SpecialSlice, got: NDArray[np.float64]) -> Answer:
        for ans in sp.answers:
            if _matches(got, ans.value):
                return ans
        return sp.answers[0]

    def semantics(self, computed: Any) -> list[tuple[str, str]]:
        """``(case, semantics)`` per special slice: the accepted answer that
        ``computed`` follows, or ``"other"``."""
        gflat = self._computed(computed).reshape(-1)
        out = []
        for sp in self.special_slices:
            g = gflat[sp.indices]
            label = "other"
            for ans in sp.answers:
                if _matches(g, ans.value) and np.all(
                    _score(g, ans.value, ans.residual, ans.ulp_exp) < np.inf
                ):
                    label = ans.semantics
                    break
            out.append((sp.case, label))
        return out

    def abs_error_eps(self, computed: Any) -> NDArray[np.float64]:
        """``|computed - y|`` in units of the format's epsilon (inf at special mismatches)."""
        err = self.ulp_error(computed)
        with np.errstate(all="ignore"):
            out = np.ldexp(err, self.ulp_exp.astype(np.int32) + self.fmt.precision - 1)
        return np.where(np.isfinite(err), np.minimum(out, _FMAX), err)

    def correctly_rounded(self, computed: Any) -> NDArray[np.bool_]:
        """Elements equal to the correctly rounded value (or an accepted special)."""
        got = self._computed(computed)
        exp = self.expected.astype(np.float64)
        ok = (got == exp) | (np.isnan(got) & np.isnan(exp))
        flat, gflat = ok.reshape(-1), got.reshape(-1)
        for sp in self.special_slices:
            g = gflat[sp.indices]
            v = self._answer_for(sp, g).value
            flat[sp.indices] = (g == v) | (np.isnan(g) & np.isnan(v))
        return np.asarray(ok, dtype=np.bool_)

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, tag: dict[str, Any] | None = None) -> None:
        """Write to a .npz file (no pickles), atomically. ``tag`` (JSON-able) is kept
        beside the arrays with the oracle's version; :meth:`read_tag` reads it back."""
        meta = {
            "oracle_version": ORACLE_VERSION,
            "tag": tag or {},
            "fmt": self.fmt.name,
            "axis": list(self.axis),
            "slices": [
                {
                    "case": sp.case,
                    "n": int(sp.indices.size),
                    "answers": [a.semantics for a in sp.answers],
                }
                for sp in self.special_slices
            ],
        }
        idx = [sp.indices for sp in self.special_slices]
        answers = [a for sp in self.special_slices for a in sp.answers]
        arrays: dict[str, NDArray[Any]] = {
            "expected": self.expected.astype(np.float64),
            "residual": self.residual,
            "ulp_exp": self.ulp_exp,
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "sp_indices": np.concatenate(idx) if idx else np.zeros(0, np.intp),
            "ans_value": _cat([a.value for a in answers]),
            "ans_residual": _cat([a.residual for a in answers]),
            "ans_ulp_exp": _cat([a.ulp_exp for a in answers]).astype(np.int64),
        }
        sign = getattr(self, "sign", None)  # logsumexp's, where it was asked for
        if sign is not None:
            meta["sign"] = True
            arrays["sign"] = np.asarray(sign, dtype=np.float64)
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = os.fspath(path)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # stubs mistake ** for allow_pickle
        os.replace(tmp, path)

    @staticmethod
    def read_tag(path: str | os.PathLike[str]) -> tuple[int | None, dict[str, Any]]:
        """(oracle version, tag) of a saved result, read without its arrays; (None, {})
        for files saved before versions were recorded."""
        # the file is opened here, so that it is closed when np.load rejects it
        with open(os.fspath(path), "rb") as fh, np.load(fh) as z:
            meta = json.loads(z["meta"].tobytes().decode())
        return meta.get("oracle_version"), meta.get("tag", {})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OracleResult:
        return cls.load_tagged(path)[0]

    @classmethod
    def load_tagged(
        cls, path: str | os.PathLike[str]
    ) -> tuple[OracleResult, int | None, dict[str, Any]]:
        """The saved result with its oracle version and tag (see read_tag), one read."""
        with open(os.fspath(path), "rb") as fh, np.load(fh) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            fmt = format_of(meta["fmt"])
            sp_idx, av, ar, ae = (
                z["sp_indices"],
                z["ans_value"],
                z["ans_residual"],
                z["ans_ulp_exp"],
            )
            slices = []
            i = j = 0
            for s in meta["slices"]:
                n = s["n"]
                answers = []
                for label in s["answers"]:
                    answers.append(Answer(label, av[j : j + n], ar[j : j + n], ae[j : j + n]))
                    j += n
                slices.append(SpecialSlice(s["case"], sp_idx[i : i + n], tuple(answers)))
                i += n
            fields: dict[str, Any] = dict(
                fmt=fmt,
                axis=tuple(meta["axis"]),
                expected=z["expected"].astype(fmt.dtype),
                residual=z["residual"],
                ulp_exp=z["ulp_exp"],
                special_slices=tuple(slices),
            )
            if meta.get("sign"):  # a logsumexp answer with its sign
                from ._logsumexp import LogSumExpResult

                sign = z["sign"].astype(fmt.dtype)
                shape = fields["expected"].shape
                if sign.shape != shape:
                    raise ValueError(f"a sign of shape {sign.shape} beside values of {shape}")
                res: OracleResult = LogSumExpResult(**fields, sign=sign)
            else:
                res = cls(**fields)
        return res, meta.get("oracle_version"), meta.get("tag", {})


def _cat(parts: list[NDArray[Any]]) -> NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0)

"""Pass/fail budgets: the largest ULP error a cell may have, per dtype
(conformance/data/budgets.toml by default; ``--budgets FILE`` replaces it).

The file is checked as a whole before any cell is judged: every key known, every value
a non-negative number, and each error names the file, the key and what was expected.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference import FORMATS

__all__ = ["DEFAULT_BUDGETS", "Budgets", "BudgetsError"]

DEFAULT_BUDGETS = Path(__file__).parents[1] / "data" / "budgets.toml"


class BudgetsError(ValueError):
    """A budgets file that cannot be used, with the file, the key and the reason."""


def _number(p: Path, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BudgetsError(
            f"budgets file {str(p)!r}: {key} = {v!r} is a {type(v).__name__}; "
            "expected a number of ULP (>= 0)"
        )
    if math.isnan(v) or v < 0:
        raise BudgetsError(f"budgets file {str(p)!r}: {key} = {v!r}; expected a number >= 0")
    return float(v)


def _table(p: Path, key: str, v: Any, example: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BudgetsError(
            f"budgets file {str(p)!r}: {key} = {v!r} is a {type(v).__name__}; expected a "
            f"table, as in\n[{key}]\n{example}"
        )
    return v


@dataclass(frozen=True)
class Budgets:
    """Per-dtype max ULP budgets."""

    max_ulp: dict[str, float] = field(default_factory=dict)
    default: float = 4.0
    source: str = "default"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Budgets:
        """Read and check a budgets file (raises BudgetsError, or FileNotFoundError)."""
        p = Path(path) if path is not None else DEFAULT_BUDGETS
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"budgets file {str(p)!r} does not exist") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise BudgetsError(f"budgets file {str(p)!r} cannot be read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BudgetsError(f"budgets file {str(p)!r} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - {"default", "max_ulp"})
        if unknown:
            raise BudgetsError(
                f"budgets file {str(p)!r}: unknown key {unknown[0]!r}; known: 'default' "
                "(a table with max_ulp) and 'max_ulp' (a table of dtype = ULP)"
            )
        default = 4.0
        if "default" in data:
            d = _table(p, "default", data["default"], "max_ulp = 4.0")
            extra = sorted(set(d) - {"max_ulp"})
            if extra:
                raise BudgetsError(
                    f"budgets file {str(p)!r}: unknown key 'default.{extra[0]}'; known: "
                    "'default.max_ulp'"
                )
            if "max_ulp" in d:
                default = _number(p, "default.max_ulp", d["max_ulp"])
        per: dict[str, float] = {}
        if "max_ulp" in data:
            m = _table(p, "max_ulp", data["max_ulp"], "float32 = 4.0")
            for k, v in m.items():
                if k not in FORMATS:
                    raise BudgetsError(
                        f"budgets file {str(p)!r}: unknown dtype 'max_ulp.{k}'; known: "
                        + ", ".join(FORMATS)
                    )
                per[k] = _number(p, f"max_ulp.{k}", v)
        return cls(per, default, str(p))

    def for_dtype(self, dtype: str) -> float:
        return self.max_ulp.get(dtype, self.default)

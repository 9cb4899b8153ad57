"""What judged a cell, as one digest stored in its record (the ``judge`` column).

A cell's verdict is a function of its inputs, the candidate (the sources of its
top-level package, and its import closure: every module it loads, found by a probe
that imports it in a sandboxed process), the harness and oracle that scored it, the
budget, the library versions, the platform the library computed on, the recorded
settings (the environment variables libraries read) and the run's limits (the timeout,
the memory cap, the sandbox). ``run --resume``
reuses a finished cell only when its digest is the one the run would give it now;
anything else is rerun.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..functions._candidates import Candidate, locate, split_target

__all__ = ["candidate_digest", "cell_judge", "closure_digest", "inputs_digest"]

_SOURCES = {".py", ".so", ".pyd", ".c", ".h", ".pyx"}
_MAX_FILES = 400


def inputs_digest(cases: Sequence[Any]) -> str:
    """A hash of every input of a cell: values, dtype, shape, axis, layout, weights
    and return_sign."""
    h = hashlib.sha256()
    for c in cases:
        h.update(f"{c.x.dtype.name}|{c.x.shape}|{c.axis!r}|{c.transposed}|".encode())
        h.update(np.ascontiguousarray(c.x).tobytes())
        if getattr(c, "b", None) is not None:  # (unweighted digests as before)
            h.update(b"|b|" + np.ascontiguousarray(c.b).tobytes())
        if getattr(c, "return_sign", False):
            h.update(b"|return_sign")
    return h.hexdigest()[:16]


def candidate_digest(c: Candidate) -> str:
    """A hash of the candidate's source, found without importing it: its module file
    alone where it is a top-level module, else every source file of its top-level
    package (tests left out), so that a helper module beside it (mypkg.helpers for
    mypkg.mod:fn) is part of the verdict too. Empty where unknown."""
    try:
        module, _ = split_target(c.target)
        top = module.split(".")[0]
        where = locate(top) if top != module else locate(module)
    except ValueError:
        return ""
    if where is None or not where.exists():
        return ""
    files: list[Path]
    if where.name == "__init__.py":
        root = where.parent
        files = sorted(
            f for f in root.rglob("*")
            if f.suffix in _SOURCES and "tests" not in f.relative_to(root).parts
            and "__pycache__" not in f.parts
        )[:_MAX_FILES]  # fmt: skip
    elif where.is_file():
        files = [where]
    else:
        return ""
    h = hashlib.sha256(c.target.encode())
    for f in files:
        try:
            h.update(str(f.name).encode())
            h.update(f.read_bytes())
        except OSError:
            continue
    return h.hexdigest()[:16]


def closure_digest(files: Sequence[str]) -> str:
    """A hash of a candidate's import closure (``_worker.loaded_files``, reported by its
    probe): each file's content, and for a package installed in site-packages the
    version of the distribution that provides it (hashing torch's 2,000 files would
    cost seconds a run). The files are read here, by the supervisor."""
    from importlib import metadata

    try:
        owners = metadata.packages_distributions()
    except Exception:
        owners = {}
    h = hashlib.sha256()
    for f in sorted(set(files)):
        p = Path(f)
        parent = p.parent.name
        if parent in ("site-packages", "dist-packages"):
            top = p.name.split(".")[0]
            dists = owners.get(top, [])
            versions = []
            for d in sorted(set(dists)):
                try:
                    versions.append(f"{d}=={metadata.version(d)}")
                except Exception:
                    versions.append(f"{d}==?")
            h.update(f"{p.name}|{','.join(versions) or '?'}\n".encode())
            if not dists and p.is_file():  # a single-file module with no distribution
                h.update(p.read_bytes())
            continue
        try:
            h.update(f"{f}\n".encode())
            h.update(p.read_bytes())
        except OSError:
            h.update(b"unreadable\n")
    return h.hexdigest()[:16]


def cell_judge(
    settings: dict[str, Any], key: str, budget: float, inputs: str, candidate: str,
    platform: str, limits: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """limits: the run's settings that can change a verdict besides those (the timeout:
    a cell that timed out under a shorter one is not this run's verdict)"""
    blob = json.dumps(
        {"settings": settings, "cell": key, "budget": budget, "inputs": inputs,
         "candidate": candidate, "platform": platform, "limits": limits or {}},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

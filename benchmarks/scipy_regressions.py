"""Two released SciPy regressions of logsumexp, caught by the gate.

For each pair of SciPy releases this script installs both from the package index into
environments of their own (beside this project, installed editable), sweeps SciPy's
logsumexp in each on NumPy arrays, makes a baseline from the older release with
``gate --update`` and gates the newer release against it:

- scipy/scipy#22903: 1.14.1 -> 1.15.2 on the ``weights`` family. 1.15.2 gives NaN where
  the maximum's weight is negative and the sum positive.
- scipy/scipy#23548: 1.15.0 -> 1.16.0 on the ``sign-specials`` family. 1.16.0 gives the
  sign NaN for ``logsumexp([inf], return_sign=True)``.

The gate must fail (exit status 1) and name the input class; the script prints each
gate's output and exits 0 when both regressions are caught, 1 otherwise. It needs the
network (the package index) the first time, and is not part of CI.

    python3 benchmarks/scipy_regressions.py [--workdir results/scipy-regressions]

docs/reports-and-gate.md quotes one run's output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (issue, older release, newer release, family, dtypes)
PAIRS = (
    ("scipy/scipy#22903", "1.14.1", "1.15.2", "weights", "float32,float64"),
    ("scipy/scipy#23548", "1.15.0", "1.16.0", "sign-specials", "float32,float64"),
)


def _env(workdir: Path, version: str, log: list[str]) -> Path:
    """An environment with scipy==version, NumPy < 2.3 (1.14's limit) and this project."""
    root = workdir / f"scipy-{version}"
    py = root / "bin" / "python"
    if not py.exists():
        venv.create(root, with_pip=True)
    pip = [str(py), "-m", "pip", "install", "-q", "-e", str(REPO), f"scipy=={version}",
           "numpy<2.3"]  # fmt: skip
    subprocess.run(pip, check=True)
    got = subprocess.run([str(py), "-c", "import scipy; print(scipy.__version__)"],
                         check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    if got != version:
        raise SystemExit(f"{root}: scipy {got} installed, not {version}")
    log.append(f"environment {root.name}: scipy {got}")
    return py


def _sweep(py: Path, workdir: Path, version: str, fam: str, dtypes: str) -> Path:
    out = workdir / f"results-{fam}-{version}"
    cmd = [str(py), "-m", "conformance", "run", "--functions", "logsumexp", "--candidates",
           "scipy", "--backends", "numpy:cpu", "--dtypes", dtypes, "--families", fam,
           "--results", str(out), "--cache", str(workdir / "oracle-cache"),
           "--no-progress"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=workdir, capture_output=True)
    return out


def _gate(py: Path, results: Path, baseline: Path, update: bool = False) -> tuple[int, str]:
    cmd = [str(py), "-m", "conformance", "gate", "--results", str(results),
           "--baseline", str(baseline)] + (["--update"] if update else [])  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=baseline.parent)
    return p.returncode, (p.stdout + p.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("results/scipy-regressions"))
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    caught = 0
    for issue, old, new, fam, dtypes in PAIRS:
        log: list[str] = []
        py_old, py_new = _env(workdir, old, log), _env(workdir, new, log)
        r_old = _sweep(py_old, workdir, old, fam, dtypes)
        r_new = _sweep(py_new, workdir, new, fam, dtypes)
        baseline = workdir / f"baseline-{fam}-{old}.json"
        baseline.unlink(missing_ok=True)
        rc_up, out_up = _gate(py_old, r_old, baseline, update=True)
        rc, out = _gate(py_new, r_new, baseline)
        print(f"## {issue}: SciPy {old} -> {new}, family {fam}\n")
        print("\n".join(log))
        print(f"\n$ python -m conformance gate --update   # SciPy {old}: exit {rc_up}")
        print(out_up)
        print(f"\n$ python -m conformance gate            # SciPy {new}: exit {rc}")
        print(out + "\n")
        caught += rc_up == 0 and rc == 1
    print(f"{caught} of {len(PAIRS)} regressions caught")
    return 0 if caught == len(PAIRS) else 1


if __name__ == "__main__":
    sys.exit(main())

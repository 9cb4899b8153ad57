"""Public names, import hygiene, the command line, persistence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import conformance
import impl
import reference
from reference import OracleResult, evaluate
from reference._cli import main, parse_array


def test_public_names():
    assert sorted(reference.__all__) == sorted(
        [
            "FORMATS",
            "ORACLE_VERSION",
            "Answer",
            "Format",
            "LogSumExpResult",
            "OracleResult",
            "SpecialSlice",
            "engine_info",
            "evaluate",
            "evaluate_logsumexp",
            "evaluate_softmax",
            "format_of",
            "log_softmax",
            "log_softmax_pairs",
            "logsumexp",
            "pair_values",
            "softmax",
            "ulp_error",
            "ulp_error_direct",
        ]
    )
    for name in reference.__all__:
        assert hasattr(reference, name)
    assert isinstance(impl.__all__, list) and isinstance(conformance.__all__, list)


def test_importing_does_not_import_backends():
    code = (
        "import sys, reference, impl, conformance, numpy as np\n"
        "reference.log_softmax(np.array([0.0, 1.0]))\n"
        "backends = ('torch', 'jax', 'cupy', 'dask', 'array_api_strict')\n"
        "bad = [m for m in backends if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_prints_repr_and_hex(capsys):
    assert main(["[0, -40]", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "-4.248354255291589e-18" in out and "-0x1.39792499b1a24p-58" in out
    assert "result = [-4.248354255291589e-18, -40.0]" in out


def test_cli_prints_each_format_at_its_own_width(capsys):
    """float32 results print as float32 (shortest decimal, 6 hex digits), not as the
    float64 they are held in; a residual below 1e-6 is not printed as -0.000000."""
    assert main(["[0, -20]", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "-2.0611537e-09" in out and "-0x1.1b4866p-29 " in out
    assert "-2.06115369216775e-09 " not in out and "0000000p" not in out
    assert main(["[0, -8, 3]", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "-11.0625" in out and "-0x1.62p+3 " in out
    assert main(["[0, -60]", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out  # -60's residual is -1.2e-12 ulp
    assert "-0.000000" not in out and "-1.23e-12" in out


def test_cli_module_entry_point_and_errors():
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "reference",
            "[[1, inf], [2, '0x1p-3']]",
            "--axis",
            "1",
            "--dtype",
            "float32",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "result = [[-inf, 0.0], [-0.14267505705356598, -2.0176751613616943]]" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "reference", "[1, 2"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "cannot parse" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "reference", "[1, 2]", "--axis", "3"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "axis 3 is out of bounds" in bad.stderr


def test_parse_array():
    assert parse_array("[1, -inf, '0x1p-2']") == [1, -float("inf"), 0.25]
    assert parse_array("3") == [3]


def test_save_and_load_round_trip(tmp_path):
    x = np.array(
        [[0.0, np.inf, np.inf, 1.0], [0.0, -40.0, 3.0, np.nan], [1.0, 2.0, 3.0, 4.0]],
        dtype=np.float32,
    )
    res = evaluate(x, axis=1)
    path = tmp_path / "oracle.npz"
    res.save(path)
    back = OracleResult.load(path)
    assert back.fmt == res.fmt and back.axis == res.axis
    np.testing.assert_array_equal(back.expected, res.expected)
    cand = np.where(np.isinf(x), np.nan, np.float32(-1.5))
    np.testing.assert_array_equal(back.ulp_error(cand), res.ulp_error(cand))
    assert back.semantics(cand) == res.semantics(cand)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The Python blocks of the README and the docs run, and the values in their
    comments are what the code returns."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    readme = root / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not beside the package (installed without sources)")
    pages = [readme, *sorted((root / "docs").glob("*.md"))]
    blocks = [
        b for p in pages for b in re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S)
    ]
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    checked = 0
    for block in blocks:
        ns: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), ns)
        for line in block.splitlines():
            m = re.match(r"((?:reference|impl)\.\w+\(.*\))\s+# (array\(.*\))$", line)
            if m:
                shown = repr(eval(m.group(1), ns))
                assert shown == m.group(2), (m.group(1), shown)
                checked += 1
    assert checked >= 3


def test_cli_other_functions(capsys):
    assert main(["[0, -40]", "--function", "logsumexp"]) == 0
    out = capsys.readouterr().out
    assert "logsumexp, axis=None" in out and "4.248354255291589e-18" in out
    assert "result = 4.248354255291589e-18" in out
    args = ["[0, 0]", "--function", "logsumexp", "--b", "[1, -1]"]
    assert main(args) == 0
    assert "-inf" in capsys.readouterr().out
    assert main(["[0, -20]", "--function", "softmax", "--dtype", "float32"]) == 0
    assert "2.0611537e-09" in capsys.readouterr().out
    assert main(["[0, -20]", "--b", "[1, 2]"]) == 2
    assert "--function logsumexp" in capsys.readouterr().err

"""threefactor.verify.gradcheck (threefactor.check_rule): passes on the real rules, fails on a wrong one, takes user kernels; the CLI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.backends.numpy import NumpyBackend
from threefactor.verify.gradcheck import GradcheckError, assert_update_matches, check_rule, relative_error
from threefactor.verify.variants import check_all, check_conv_all
from threefactor.cli.check import write_json
from threefactor.rule.rules import Rule
from threefactor.verify.torch_ref import torch_available


class Polynomial:
    """k(a, b) = (aᵀb / s + 1)^d: smooth, complex-safe, torch-safe (the module docstring's example)."""

    def __init__(self, s=4.0, d=3):
        self.s, self.d = s, d

    def matrix(self, v, xp):
        return (v @ v.T / self.s + 1.0) ** self.d

    def pullback(self, v, K, C, xp):
        B = C * self.d * (v @ v.T / self.s + 1.0) ** (self.d - 1) / self.s
        return (B + B.T) @ v


class AbsCauchy:
    """k(a, b) = 1 / (1 + ‖a - b‖²/s) with ‖·‖² written through abs(): right in real
    arithmetic, but abs() kills the complex step, so only fd and torch can check it."""

    def __init__(self, s=2.0):
        self.s = s

    def matrix(self, v, xp):
        d = (xp.abs(v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        return 1.0 / (1.0 + d / self.s)

    def pullback(self, v, K, C, xp):
        A = C * K * K * (2.0 / self.s)          # dL/dd_ij = -C_ij K_ij² / s, d_ij = ‖v_i - v_j‖²
        return -2.0 * (A.sum(axis=1)[:, None] * v - A @ v)


class WrongPolynomial(Polynomial):
    def pullback(self, v, K, C, xp):
        return 1.01 * super().pullback(v, K, C, xp)


def test_check_all_passes_on_numpy():
    results = check_all(backends=["numpy"])
    assert len(results) == 3 * 3 * 4 * 3          # kernels × groupings × activations × methods
    bad = [r for r in results if not r.ok]
    assert not bad, bad
    for r in results:
        if r.method == "torch" and not torch_available():
            assert r.status == "SKIP"
            continue
        assert r.status == "PASS" and r.max_rel_error <= r.tolerance
        assert r.max_rel_error < (1e-8 if r.method == "fd" else 1e-13)


def test_check_float32():
    results = check_all(backends=["numpy"], dtype=np.float32, kernels=["gaussian", "cosine"],
                        activations=["lrelu"])
    assert all(r.passed for r in results if r.method != "torch" or torch_available())
    assert {r.dtype for r in results} == {"float32"}


@pytest.mark.parametrize("factor", [1.01, 1 + 1e-8])
def test_check_fails_on_a_wrong_update(monkeypatch, factor):
    """Scale the Hebbian product: the complex step catches even 1e-8, fd a 1 % error."""
    hebbian = NumpyBackend.hebbian
    monkeypatch.setattr(NumpyBackend, "hebbian", lambda self, post, x: factor * hebbian(self, post, x))
    results = check_rule(Rule(groups=4, p=0.5), backends=["numpy"])
    by_method = {r.method: r for r in results}
    assert by_method["complex"].status == "FAIL"
    assert by_method["fd"].status == ("FAIL" if factor == 1.01 else "PASS")
    assert by_method["complex"].max_rel_error == pytest.approx(factor - 1, rel=1e-3)
    with pytest.raises(GradcheckError, match=r"complex -dL/dW"):
        check_rule(Rule(kernel="cosine"), backends=["numpy"], methods=("complex",),
                   raise_on_failure=True)


def test_check_fails_on_a_wrong_primitive(monkeypatch):
    laplacian = NumpyBackend.laplacian
    monkeypatch.setattr(NumpyBackend, "laplacian", lambda self, A, v: 1.01 * laplacian(self, A, v))
    results = check_rule(Rule(), backends=["numpy"], methods=("fd", "complex"))
    assert [r.status for r in results] == ["FAIL", "FAIL"]


def test_gradcheck_error_shows_both_values():
    ref = np.array([[1.0, -2.0], [0.5, 4.0]])
    explicit = ref.copy()
    explicit[1, 0] = 0.75
    assert relative_error(explicit, ref) == (pytest.approx(0.25 / 4.0), (1, 0))
    with pytest.raises(GradcheckError) as info:
        assert_update_matches(explicit, ref, tolerance=1e-10, method="complex")
    msg = str(info.value)
    assert "7.500000000000000e-01" in msg and "5.000000000000000e-01" in msg
    assert "(n=1, k=0)" in msg and "6.250e-02" in msg and "tolerance 1e-10" in msg
    assert assert_update_matches(ref, ref) == 0.0


@pytest.mark.parametrize("groups", [None, 4])
def test_user_kernel_passes(groups):
    results = check_rule(Rule(kernel=Polynomial(), groups=groups, p=0.5), backends=["numpy"])
    assert results and all(r.ok for r in results), results
    assert {r.method for r in results if r.status == "PASS"} >= {"fd", "complex"}
    assert results[0].variant.startswith("Polynomial/")


def test_complex_unsafe_user_kernel_falls_back_to_fd_and_torch():
    results = {r.method: r for r in check_rule(Rule(kernel=AbsCauchy()), backends=["numpy"])}
    assert results["complex"].status == "SKIP"
    assert "not complex-safe" in results["complex"].note
    assert results["fd"].status == "PASS"
    if torch_available():
        assert results["torch"].status == "PASS" and results["torch"].max_rel_error < 1e-12


def test_wrong_user_kernel_fails():
    results = check_rule(Rule(kernel=WrongPolynomial()), backends=["numpy"])
    assert all(r.status == "FAIL" for r in results if r.passed is not None)


# --------------------------------------------------------------------------- command line


def test_cli_full_matrix_exits_zero(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "threefactor", "check", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["variant", "backend", "method"]
    assert "max rel error" in lines[0] and "worst (n, k)" in lines[0]
    assert any(line.startswith("gaussian/grp+div/selu") and "PASS" in line for line in lines)
    assert any(line.startswith("conv/gaussian/grp+div/selu/pool=max") and "PASS" in line for line in lines)
    assert "0 failed" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["n_failed"] == 0
    assert len(doc["results"]) >= 3 * 3 * 4 * 2
    first = doc["results"][0]
    assert set(first) >= {"variant", "backend", "method", "max_rel_error", "worst", "explicit",
                          "reference", "passed", "tolerance", "status"}
    assert doc["meta"]["dtype"] == "float64"
    assert [p.name for p in tmp_path.iterdir()] == ["check.json"]       # no temp file left


def test_cli_subset_and_failure(monkeypatch, capsys):
    argv = ["check", "--backend", "numpy", "--kernel", "cosine", "--grouping", "grp",
            "--activation", "selu", "--method", "complex", "--no-conv"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "cosine/grp/selu" in out and "PASS" in out and "1 comparisons" in out
    hebbian = NumpyBackend.hebbian
    monkeypatch.setattr(NumpyBackend, "hebbian", lambda self, post, x: 1.01 * hebbian(self, post, x))
    assert cli.main(argv) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_user_kernel_module(tmp_path, monkeypatch, capsys):
    src = ("class Poly:\n"
           "    def matrix(self, v, xp):\n        return (v @ v.T / 4.0 + 1.0) ** 2\n"
           "    def pullback(self, v, K, C, xp):\n"
           "        B = C * 2 * (v @ v.T / 4.0 + 1.0) / 4.0\n        return (B + B.T) @ v\n")
    (tmp_path / "my_kernels.py").write_text(src)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for spec in ["my_kernels:Poly", str(tmp_path / "my_kernels.py") + ":Poly"]:
        assert cli.main(["check", "--backend", "numpy", "--kernel-module", spec,
                         "--activation", "lrelu"]) == 0
        out = capsys.readouterr().out
        assert "Poly/plain/lrelu" in out and "Poly/grp+div/lrelu" in out and "gaussian" not in out


def test_cli_bad_use(capsys):
    assert cli.main(["check", "--kernel-module", "no_such_module_xyz:K"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    if "cupy" not in sys.modules:
        try:
            import cupy  # noqa: F401
        except ImportError:
            assert cli.main(["check", "--backend", "cupy"]) == 2
            err = capsys.readouterr().err
            assert err.startswith("threefactor check: error: --backend cupy is unavailable")
            assert "cupy is not installed" in err


@pytest.mark.parametrize("argv,expected", [
    (["--m", "0"], "argument --m: the batch size .* must be >= 2, got '0'"),
    (["--m", "-3"], "argument --m: the batch size .* must be >= 2, got '-3'"),
    (["--seed", "-1"], "argument --seed: the seed must be >= 0, got '-1'"),
    (["--n-in", "0"], "argument --n-in: the input width must be >= 1"),
    (["--groups", "1"], "argument --groups: the number of groups must be >= 2"),
    (["--kernel", "gausian"], "argument --kernel: 'gausian' is not known; did you mean 'gaussian'"),
])
def test_cli_bad_numbers_are_argparse_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", *argv])
    assert exc.value.code == 2
    assert re.search("threefactor check: error: " + expected, capsys.readouterr().err)


def test_cli_bad_kernel_module_is_named(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "needs.py").write_text("class K:\n    def __init__(self, a):\n        pass\n")
    for spec, expected in [(f"{tmp_path}/nofile.py:Foo", "no such file"),
                           (f"{tmp_path}/broken.py:Foo", "broken.py line 1: "),
                           (f"{tmp_path}/boom.py:Foo", "RuntimeError: boom"),
                           (f"{tmp_path}/needs.py:K", "could not be built with no arguments"),
                           (f"{tmp_path}/needs.py:Other", "has no 'Other'"),
                           ("no_colon", "must be MODULE:NAME")]:
        assert cli.main(["check", "--kernel-module", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith("threefactor check: error: --kernel-module") and expected in err, err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make,expected", [
    (lambda d: (d / "afile").write_text("x") and str(d / "afile" / "x.json"), "is a file, not a folder"),
    (lambda d: str(d), "is a folder; expected a file path"),
])
def test_cli_bad_json_path_is_refused_before_checking(tmp_path, make, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--json", make(tmp_path)])
    assert exc.value.code == 2
    assert re.search("argument --json: .*" + expected, capsys.readouterr().err)


def test_cli_kernel_aliases_and_json_in_a_new_folder(tmp_path, capsys):
    """--kernel cossim is cosine (bench's and train's name); --json creates missing folders, like bench."""
    out = tmp_path / "new" / "dir" / "check.json"
    assert cli.main(["check", "--backend", "numpy", "--kernel", "cossim", "--grouping", "grp",
                     "--activation", "selu", "--method", "complex", "--no-conv", "--json", str(out)]) == 0
    assert "cosine/grp/selu" in capsys.readouterr().out
    assert json.loads(out.read_text())["passed"] is True


def test_write_json_is_atomic(tmp_path, monkeypatch):
    results = check_rule(Rule(), backends=["numpy"], methods=("complex",))
    path = tmp_path / "r.json"
    path.write_text("old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_json(str(path), results)
    assert path.read_text() == "old"                      # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]   # and no temp file is left
    monkeypatch.undo()
    write_json(str(path), results, {"seed": 0})
    assert json.loads(path.read_text())["results"][0]["method"] == "complex"


def test_degenerate_cosine_with_two_groups_is_refused():
    with pytest.raises(ValueError, match=r"groups=2 with the cosine kernel is degenerate"):
        check_rule(Rule(kernel="cosine", groups=2), backends=["numpy"])


# --------------------------------------------------------------------------- conv layers


def test_check_conv_all_passes_on_numpy():
    """One activation here; the CLI test runs every activation on every backend."""
    results = check_conv_all(backends=["numpy"], activations=["selu"])
    assert len(results) == 3 * 3 * 2          # kernels × groupings × pools
    assert {r.method for r in results} == {"complex"}
    assert all(r.status == "PASS" and r.max_rel_error < 1e-12 for r in results), \
        [r for r in results if not r.max_rel_error < 1e-12]
    names = {r.variant for r in results}
    assert "conv/cosine/grp+div/selu/pool=max" in names and "conv/linear/plain/selu/pool=None" in names
    lin = check_conv_all(backends=["numpy"], kernels=["gaussian"], groupings=["grp"], activations=["selu"],
                         label_kernels=["linear"], pools=["max"], dtype=np.float32)
    assert [(r.variant, r.dtype, r.status) for r in lin] == [("conv/gaussian/grp/selu/pool=max/ylinear",
                                                             "float32", "PASS")]


def test_check_conv_fails_on_a_wrong_update(monkeypatch):
    hebbian = NumpyBackend.hebbian
    monkeypatch.setattr(NumpyBackend, "hebbian", lambda self, post, x: (1 + 1e-8) * hebbian(self, post, x))
    results = check_conv_all(backends=["numpy"], kernels=["gaussian"], activations=["selu"])
    assert results and all(r.status == "FAIL" for r in results)
    assert results[0].max_rel_error == pytest.approx(1e-8, rel=1e-3)


def test_cli_conv_only_and_dense_only(tmp_path, capsys):
    base = ["check", "--backend", "numpy", "--kernel", "gaussian", "--grouping", "grp+div",
            "--activation", "selu", "--method", "complex"]
    out = tmp_path / "conv.json"
    assert cli.main(base + ["--conv", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if "PASS" in line]
    assert [line.split()[0] for line in rows] == ["conv/gaussian/grp+div/selu/pool=None",
                                                  "conv/gaussian/grp+div/selu/pool=max"]
    doc = json.loads(out.read_text())
    assert doc["passed"] and doc["meta"]["conv"] == "conv only" and len(doc["results"]) == 2
    assert cli.main(base + ["--no-conv"]) == 0
    text = capsys.readouterr().out
    assert "conv/" not in text and "gaussian/grp+div/selu" in text
    assert cli.main(base) == 0
    assert "3 comparisons" in capsys.readouterr().out              # dense + 2 conv
    assert cli.main(base[:-1] + ["fd", "--conv"]) == 2
    assert "nothing to check" in capsys.readouterr().err


@pytest.mark.gpu
def test_check_cli_passes_on_the_gpu(capsys):
    """`threefactor check --backend cupy --conv --batchnorm`: every dense, conv and batchnorm rule's update on
    the CuPy backend equals -dL/dW (float64; finite differences, complex step and autograd references)."""
    from threefactor.backends import BackendUnavailable, get_backend
    try:
        get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(str(exc))
    assert cli.main(["check", "--backend", "cupy", "--conv", "--batchnorm"]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out and "cupy" in out and "FAIL " not in out

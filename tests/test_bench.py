"""The benchmark machinery runs end to end on a tiny shape; no timing is asserted."""
import argparse
import json
import re

import numpy as np
import pytest

from threefactor.bench import suite as bench
from threefactor.cli import bench as bench_cli
from threefactor.cli import main as cli
from threefactor.training.atomic import write_json
from threefactor.bench.machine import blas_threads, machine_info

RECORD_KEYS = {"backend", "dtype", "rule", "m", "n_in", "n_out", "update_s", "update_iqr_s", "repeats",
               "public_s", "synapses_per_s", "peak_mem_bytes", "mem_method", "gemm", "ratio_floor",
               "ratio_floor_with_kernel", "autograd_s", "autograd_peak_mem_bytes",
               "speedup_vs_autograd", "autograd_floor_s", "autograd_own_process", "loadavg_before", "update_graph_s", "fastest",
               "loadavg_after", "ratio_gemms"}
GEMM_KEYS = {"forward_s", "update_s", "kernel_s", "floor_s", "floor_with_kernel_s", "laplacian_s", "all_s"}


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_machine_info_is_json_ready():
    info = machine_info()
    json.dumps(info)
    assert {"date", "host", "cpu", "cores", "blas", "gpu", "versions"} <= set(info)
    assert blas_threads() >= 1


def test_time_call_and_interleaved_summaries():
    calls = []
    t = bench.time_call(lambda: calls.append(1), budget=0.0, min_repeats=4, warmup=2)
    assert t["repeats"] == 4 and len(calls) == 6 and t["median_s"] >= 0
    out = bench.time_interleaved({"a": lambda: None, "b": lambda: None}, budget=0.0, min_repeats=3,
                                 warmup=1)
    assert set(out) == {"a", "b"} and out["a"]["repeats"] == 3


def test_peak_memory_sees_numpy_buffers():
    peak, method = bench.peak_memory(lambda: np.ones(1 << 20))
    assert peak >= 8 * (1 << 20) and "tracemalloc" in method


@pytest.fixture
def restore_threads():
    from threefactor.bench.machine import set_threads

    before = blas_threads()
    yield
    set_threads(before)


def test_cli_quick_run_writes_documented_json(tmp_path, capsys, restore_threads):
    path = tmp_path / "out" / "bench.json"
    argv = ["bench", "--quick", "--backend", "numpy", "--m", "16", "--shapes", "32x64",
            "--budget", "0", "--threads", "1", "--json", str(path)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "gauss-grp+div" in printed and "wrote" in printed
    doc = json.loads(path.read_text())
    assert doc["schema"] == bench.SCHEMA and doc["kind"] == "update"
    assert {"machine", "settings", "results", "command", "skipped"} <= set(doc)
    assert doc["settings"]["blas_threads"] == 1 and doc["settings"]["threads_set"]["blas"] == 1
    assert {r["rule"] for r in doc["results"]} == set(bench.DEFAULT_RULES)
    for r in doc["results"]:
        assert set(r) == RECORD_KEYS and set(r["gemm"]) == GEMM_KEYS
        assert (r["backend"], r["m"], r["n_in"], r["n_out"], r["dtype"]) == ("numpy", 16, 32, 64, "float32")
        g = r["gemm"]
        assert r["ratio_floor"] == pytest.approx(r["update_s"] / g["floor_s"])
        assert g["floor_s"] == pytest.approx(g["forward_s"] + g["update_s"])
        assert g["all_s"] == pytest.approx(g["floor_s"] + g["kernel_s"] + g["laplacian_s"])
        assert r["ratio_gemms"] == pytest.approx(r["update_s"] / g["all_s"]) and r["ratio_gemms"] < r["ratio_floor"]
        assert r["synapses_per_s"] == pytest.approx(64 * 32 / r["update_s"])
        if _has_torch():       # in its own process (bench.autograd_child), --threads 1 fixes its setting
            assert r["speedup_vs_autograd"] == pytest.approx(r["autograd_s"] / r["update_s"])
            assert r["autograd_own_process"]["best_setting"] == "threads=1"
        else:
            assert r["autograd_s"] is None and r["speedup_vs_autograd"] is None
    capsys.readouterr()
    assert cli.main(["bench", "--summary", str(path)]) == 0
    table = capsys.readouterr().out
    assert "| numpy | gauss-grp+div | 16 | 32×64 |" in table and "ours / floor" in table


def test_bench_case_float64_without_autograd():
    timing = {"budget": 0.0, "min_repeats": 1, "warmup": 1}
    r = bench.bench_case("numpy", 8, 16, 64, "cossim-grp+div", np.float64, timing, autograd=False)
    assert r["dtype"] == "float64" and r["autograd_s"] is None and r["ratio_floor"] > 0


def test_profile_attributes_time_to_primitives():
    timing = {"budget": 0.0, "min_repeats": 1, "warmup": 0}
    r = bench.bench_case("numpy", 8, 16, 64, "gauss-grp+div", timing=timing, autograd=False, profile=True)
    # a grouped rule's forward pass and group statistics come from one primitive
    assert {"forward_grouped", "gaussian_kernel", "hebbian", "post_grouped", "other"} <= set(r["profile_s"])
    r = bench.bench_case("numpy", 8, 16, 64, "gauss", timing=timing, autograd=False, profile=True)
    assert {"forward", "gaussian_kernel", "laplacian", "hebbian", "post_plain", "other"} <= set(r["profile_s"])


def test_unavailable_backend_is_skipped_with_reason():
    timing = {"budget": 0.0, "min_repeats": 1, "warmup": 0}
    records, skipped = bench.run_suite(["cupy"], [8], [(16, 64)], ["gauss"], timing=timing)
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert records == [] and "cupy" in skipped["cupy"]


def test_shape_argument_is_checked():
    assert bench_cli._shape("784x1024") == (784, 1024)
    with pytest.raises(argparse.ArgumentTypeError, match="N_INxN_OUT"):
        bench_cli._shape("784")


def test_write_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "a.json"
    write_json(str(path), {"x": 1})
    with pytest.raises(ValueError):
        write_json(str(path), {"x": float("nan")})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_bench_step_script_runs_tiny(tmp_path, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"
    spec = importlib.util.spec_from_file_location("bench_step", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "step.json"
    assert mod.main(["--backend", "numpy", "--batch", "16", "--hidden", "64", "64", "--groups", "8",
                     "--quick", "--budget", "0", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "step" and len(doc["results"]) == 1
    r = doc["results"][0]
    assert r["samples_per_s"] == pytest.approx(16 / r["step_s"])
    assert r["ratio_floor"] == pytest.approx(r["step_s"] / r["floor_s"])
    if _has_torch():        # autograd timed in its own process, alternating with ours (bench.autograd_child)
        own = r["autograd_own_process"]
        assert r["speedup_vs_autograd"] == pytest.approx(r["autograd_s"] / own["ours_s"])
        assert own["best_setting"] in own["autograd_by_setting_s"]


def test_bench_step_flag_adds_the_mlp_step(tmp_path, capsys):
    """threefactor bench --step: the suite's JSON, then the Table 1 MLP step's next to it."""
    from threefactor.cli import main as cli

    out = tmp_path / "suite.json"
    assert cli.main(["bench", "--quick", "--backend", "numpy", "--m", "16", "--shapes", "32x64", "--rules",
                     "gauss", "--no-autograd", "--budget", "0", "--step", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MLP step 784-1024-1024-1024-10" in printed
    suite, step = json.loads(out.read_text()), json.loads((tmp_path / "suite-step.json").read_text())
    assert suite["kind"] == "update" and step["kind"] == "step"
    (r,) = step["results"]
    assert (r["backend"], r["m"], r["hidden"], r["groups"]) == ("numpy", 256, [1024, 1024, 1024], 32)
    assert r["ratio_floor"] == pytest.approx(r["step_s"] / r["floor_s"]) and r["autograd_s"] is None
    assert step["settings"]["batch"] == 256 and "shapes" not in step["settings"]


def test_bad_suite_arguments_are_named():
    with pytest.raises(ValueError, match="m \\(batch size\\)"):
        bench.run_suite(["numpy"], [1], [(16, 64)], ["gauss"])
    with pytest.raises(ValueError, match="shapes: 16x40 .*groups=32"):
        bench.run_suite(["numpy"], [8], [(16, 40)], ["gauss-grp+div"])
    with pytest.raises(ValueError, match="--shapes: 0x40: both dimensions must be >= 1"):
        bench.run_suite(["numpy"], [8], [(0, 40)], ["gauss"])


@pytest.mark.parametrize("argv,expected", [
    (["--m", "0"], "--m: a batch size .* must be >= 2, got '0'"),
    (["--m", "256", "x"], "--m: a batch size .* must be a number >= 2, got 'x'"),
    (["--budget", "-1"], "--budget: the time budget in seconds must be >= 0.0"),
    (["--threads", "0"], "--threads: the thread count must be >= 1"),
    (["--shapes", "10x"], "--shapes: a shape is N_INxN_OUT"),
    (["--shapes", "0x10"], "--shapes: a shape's dimensions must be >= 1 .*got '0x10'"),
    (["--shapes", "10x-3"], "--shapes: a shape's dimensions must be >= 1 .*got '10x-3'"),
    (["--budget", "inf"], "--budget: the time budget in seconds must be a finite number"),
    (["--budget", "nan"], "--budget: the time budget in seconds must be a finite number"),
    (["--rules", "gaussian-plane"], "--rules: 'gaussian-plane' is not known; did you mean"),
    (["--rules", "gaussian-grp"], "--rules: 'gaussian-grp' is not known; did you mean 'gauss-grp\\+div'"),
])
def test_bad_cli_arguments_are_argparse_errors(argv, expected, capsys):
    """A command-line mistake is a one-line usage error naming the flag, not a traceback from deep inside."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quick", *argv])
    assert exc.value.code == 2
    assert re.search(expected, capsys.readouterr().err)



def _no_measuring(monkeypatch):
    """Make any measurement fail the test: these errors must come before the work."""
    monkeypatch.setattr(bench_cli, "run_suite", lambda *a, **k: pytest.fail("measured despite bad use"))


def test_summary_names_a_file_that_is_not_a_bench_result(tmp_path, capsys):
    not_json = tmp_path / "afile"
    not_json.write_text("hello")
    check_report = tmp_path / "check.json"
    check_report.write_text(json.dumps({"meta": {}, "passed": True, "n_failed": 0, "results": []}))
    for path, expected in [(tmp_path / "missing.json", "cannot read .*No such file"),
                           (not_json, "is not JSON"), (check_report, "is not a threefactor bench result"),
                           (tmp_path, "cannot read")]:
        assert cli.main(["bench", "--summary", str(path)]) == 2
        err = capsys.readouterr().err
        assert re.match(r"threefactor bench: error: --summary: .*" + expected, err), err
        assert len(err.strip().splitlines()) == 1
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps({"kind": "update", "machine": {}, "results": [{}]}))
    assert cli.main(["bench", "--summary", str(truncated)]) == 2
    assert "incomplete bench result" in capsys.readouterr().err


@pytest.mark.parametrize("make,expected", [
    (lambda d: (d / "afile").write_text("x") and str(d / "afile" / "x.json"), "is a file, not a folder"),
    (lambda d: str(d), "is a folder; expected a file path"),
])
def test_bad_json_path_is_refused_before_measuring(tmp_path, make, expected, capsys, monkeypatch):
    _no_measuring(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quick", "--backend", "numpy", "--json", make(tmp_path)])
    assert exc.value.code == 2
    assert re.search("argument --json: .*" + expected, capsys.readouterr().err)


def test_derived_json_paths_are_checked_before_measuring(tmp_path, capsys, monkeypatch):
    _no_measuring(monkeypatch)
    (tmp_path / "suite-step.json").mkdir()                # where --step would write
    assert cli.main(["bench", "--quick", "--backend", "numpy", "--step", "--json",
                     str(tmp_path / "suite.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("threefactor bench: error: --json: ") and "suite-step.json is a folder" in err
    (tmp_path / "default").write_text("a file where the default path wants a folder")
    monkeypatch.setattr(bench_cli, "default_json_path", lambda kind="update": str(tmp_path / "default" / "x.json"))
    assert cli.main(["bench", "--backend", "numpy", "--m", "16", "--shapes", "32x64"]) == 2   # --quick: the cache
    assert "threefactor bench: error: --json: cannot create" in capsys.readouterr().err


def test_no_available_backend_is_an_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from threefactor.backends import BackendUnavailable

    def unavailable(name):
        raise BackendUnavailable(f"{name} is not installed here")

    monkeypatch.setattr(bench, "get_backend", unavailable)
    _no_measuring(monkeypatch)
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--backend", "cupy", "numba", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("threefactor bench: error: no backend to measure")
    assert "cupy is not installed here" in err and "numba is not installed here" in err
    assert not out.exists()


def test_shapes_that_do_not_suit_a_rule_are_a_usage_error(capsys, monkeypatch):
    _no_measuring(monkeypatch)
    assert cli.main(["bench", "--quick", "--backend", "numpy", "--shapes", "8x8", "--m", "8"]) == 2
    assert re.match(r"threefactor bench: error: --shapes: 8x8 does not suit rule 'gauss-grp\+div'",
                    capsys.readouterr().err)


def test_rules_accept_the_other_commands_spellings():
    assert [bench_cli._rule_name(t) for t in ("gaussian", "cosine-grp+div", "gaussian-grpdiv", "cossim", "gauss",
                                              "Gaussian-GRPDIV", "gaussian-plain")] \
        == ["gauss", "cossim-grp+div", "gauss-grp+div", "cossim", "gauss", "gauss-grp+div", "gauss"]
    parser, sub = cli.build_parser()
    bench_cli.configure_parser(sub.choices["bench"])
    args = parser.parse_args(["bench", "--rules", "gaussian-grp+div", "cosine"])
    assert args.rules == ["gauss-grp+div", "cossim"]


def test_bench_step_script_refuses_bad_use(tmp_path, capsys):
    from threefactor.bench import step as bench_step

    for argv, expected in [(["--groups", "3"], "--groups 3 does not suit --hidden 1024"),
                           (["--budget", "inf"], "finite"),
                           (["--json", str(tmp_path)], "argument --json: .* is a folder")]:
        with pytest.raises(SystemExit) as exc:
            bench_step.main(argv)
        assert exc.value.code == 2
        assert re.search(expected, capsys.readouterr().err)


def test_names_that_moved_out_of_bench_still_import():
    from threefactor.training import atomic
    from threefactor.bench import machine
    assert bench.configure_parser is bench_cli.configure_parser and bench.run is bench_cli.run
    assert bench.markdown_summary is bench_cli.markdown_summary
    assert bench.write_json is atomic.write_json and bench.set_threads is machine.set_threads
    with pytest.raises(AttributeError):
        bench.no_such_name


def test_blas_info_describes_numpys_blas_when_another_is_loaded():
    """scipy brings its own OpenBLAS; blas_info reports the one numpy's products run on, with its kernels."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")
    from threefactor.bench.machine import blas_info
    numpys = [p for p in threadpoolctl.threadpool_info()
              if p.get("user_api") == "blas" and "numpy" in str(p.get("filepath", ""))]
    if not numpys:
        pytest.skip("numpy's BLAS is not one threadpoolctl lists here")
    info = blas_info()
    assert (info["version"], info["architecture"]) == (numpys[0].get("version"), numpys[0].get("architecture"))

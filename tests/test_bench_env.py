"""The child-process benchmarks run (quick mode): default vs tuned environment, autograd in its own process.

No time is asserted (speed targets live in benchmarks/); only that the machinery runs and reports
consistent ratios from the environments it was asked for."""
import importlib.util
import json
import pathlib

import pytest

from threefactor.bench import autograd_child, envs
from threefactor.threads import DEFAULTS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_clean_environment_drops_thread_and_malloc_variables(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    monkeypatch.setenv("THREEFACTOR_THREADS", "keep")
    env = envs.clean_environment()
    assert not {"OMP_WAIT_POLICY", "MALLOC_TRIM_THRESHOLD_", "THREEFACTOR_THREADS"} & set(env)
    assert {k: envs.clean_environment(tuned=True)[k] for k in envs.TUNED} == envs.TUNED


def test_bench_env_script_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_env", ROOT / "benchmarks" / "bench_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "env.json"
    assert mod.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "default time / tuned time" in printed and "grpdiv/floor" in printed
    res = json.loads(out.read_text())
    (default,), (tuned,) = res["default"], res["tuned"]
    t = default["times_s"]
    assert default["ratios"]["grpdiv/floor"] == pytest.approx(
        t["grpdiv"] / (t["gemm_forward"] + t["gemm_update"] + t["gemm_kernel32"]))
    assert set(default["ratios"]) == {"grpdiv/floor", "plain/gemms", "public/engine", "out/engine"}
    # the default child got threefactor's settings from the library, the tuned one from its environment
    assert default["threads"]["set"] == DEFAULTS and tuned["threads"]["kept"] == envs.TUNED
    assert res["summary"]["default"]["grpdiv/floor"][0] == default["ratios"]["grpdiv/floor"]


def test_autograd_child_quick():
    pytest.importorskip("torch")
    timing = {"budget": 0.01, "min_repeats": 2, "warmup": 1}
    calls = []

    def ours():
        calls.append(1)
        return {"median_s": 0.5, "min_s": 0.5}

    res = autograd_child.autograd_rounds(ours, [16, 16], 8, 4, "float32", timing, rounds=1,
                                         settings=autograd_child.SETTINGS[-1:])
    (child,) = res["autograd"]["threads=1"]
    assert calls == [1] and child["torch_threads"] == 1 and child["repeats"] >= 2
    assert res["best_setting"] == "threads=1" and res["speedup"] == pytest.approx(child["median_s"] / 0.5)

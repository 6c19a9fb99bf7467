"""threefactor.bench.targets / ``threefactor bench --targets``: the speed targets judged on bench JSON."""
import glob
import json
import os

import pytest

from threefactor.cli import main as cli
from threefactor.bench import targets

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _update(backend, rule, m, n_in, n_out, ratio_floor, speedup, peak=None, dtype="float32"):
    floor_s = 1e-3
    return {"backend": backend, "dtype": dtype, "rule": rule, "m": m, "n_in": n_in, "n_out": n_out,
            "update_s": ratio_floor * floor_s, "ratio_floor": ratio_floor, "speedup_vs_autograd": speedup,
            "peak_mem_bytes": peak, "gemm": {"floor_s": floor_s, "all_s": 1.25 * floor_s}}


def _doc(kind, *records, gpu=None):
    return {"schema": "threefactor-bench/1", "kind": kind, "command": "threefactor bench",
            "machine": {"date": "2026-11-27T00:00:00", "cpu": "Test CPU", "gpu": gpu}, "results": list(records)}


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_each_bound_is_judged_on_the_target_measurement_only(tmp_path):
    doc = _doc("update",
               _update("numba", "gauss-grp+div", 256, 1024, 1024, 1.20, 1.9),    # both met
               _update("numba", "gauss", 256, 1024, 1024, 1.30, 1.4),            # both missed
               _update("numba", "gauss", 64, 1024, 1024, 9.0, 0.1),              # not a target's m
               _update("numba", "gauss", 256, 784, 1024, 9.0, 0.1),              # not a target's shape
               _update("numba", "gauss", 256, 1024, 1024, 9.0, 0.1, dtype="float64"))
    rows = targets.verdicts(targets.load([_write(tmp_path, "u.json", doc)]))
    by = {r["target"]: r for r in rows}
    assert len(rows) == 2
    grp, plain = by["CPU update, Gaussian grp+div"], by["CPU update, Gaussian plain"]
    assert (grp["floor_met"], grp["speedup_met"]) == (True, True)
    assert (plain["floor_met"], plain["speedup_met"]) == (False, False)
    assert plain["bound_gemms"] == pytest.approx(1.25)
    assert grp["speedup_ceiling"] is None                   # no autograd time in this record


def test_the_speedup_ceiling_is_autograd_over_the_rules_own_gemms(tmp_path):
    rec = _update("cupy", "gauss", 1024, 4096, 4096, 1.31, 1.38)
    rec["autograd_s"] = 1.31 * 1.38 * rec["gemm"]["floor_s"]
    (row,) = targets.verdicts(targets.load([_write(tmp_path, "u.json", _doc("update", rec))]))
    assert row["speedup_ceiling"] == pytest.approx(1.31 * 1.38 / 1.25)     # measured GEMMs: all_s = 1.25 floor
    del rec["gemm"]["all_s"]
    (row,) = targets.verdicts(targets.load([_write(tmp_path, "u.json", _doc("update", rec))]))
    assert row["speedup_ceiling"] == pytest.approx(1.31 * 1.38 / 1.1875)   # flops: 1 + 3m/(4 n_in)


def test_the_flop_bound_counts_the_plain_rules_m_by_m_products():
    """Plain: floor 2 GEMMs of 2·m·n_in·n_out flops; the Gram (half, symmetric) and the Laplacian add 3·m²·n_out."""
    for m, n_in, n_out in ((256, 1024, 1024), (1024, 4096, 4096), (64, 784, 1024)):
        floor, every = targets.gemm_flops("gauss", m, n_in, n_out)
        assert floor == 4 * m * n_in * n_out and every - floor == 3 * m * m * n_out
    floor, every = targets.gemm_flops("gauss", 256, 1024, 1024)
    assert every / floor == pytest.approx(1 + 3 * 256 / (4 * 1024))    
    floor, every = targets.gemm_flops("gauss-grp+div", 256, 1024, 1024)
    assert every - floor == 3 * 256 * 256 * 32                          # grouped: the kernel is on 32 groups


def test_step_targets_and_memory(tmp_path):
    step = _doc("step", {"backend": "numba", "dtype": "float32", "m": 256, "ratio_floor": 1.4,
                         "speedup_vs_autograd": 2.2})
    m, n = 256, 1024
    linear = m * m + m * (n + n) + n * n
    update = _doc("update", _update("numpy", "gauss", m, n, n, 2.0, None, peak=4 * 3 * linear),
                  _update("numpy", "gauss", m, n, n, 2.0, None, peak=4 * m * m * n))     # an O(m²·n) buffer
    docs = targets.load([_write(tmp_path, "s.json", step), _write(tmp_path, "u.json", update)])
    (row,) = targets.verdicts(docs)
    assert row["target"].startswith("CPU MLP step") and row["floor_met"] is False and row["speedup_met"] is True
    mem = targets.memory_verdicts(docs)
    assert [r["met"] for r in mem] == [True, False]
    assert mem[0]["per_element"] == pytest.approx(3.0)
    text = targets.markdown(docs)
    assert "**missed**" in text and "1 of 3 bounds met." in text


def test_cli_targets_prints_the_table_and_names_a_bad_file(tmp_path, capsys):
    good = _write(tmp_path, "u.json", _doc("update", _update("cupy", "gauss", 1024, 4096, 4096, 1.31, 1.38),
                                           gpu={"name": "Test GPU"}))
    assert cli.main(["bench", "--targets", good]) == 0
    out = capsys.readouterr().out
    assert "| GPU update, Gaussian plain | " in out and "Test GPU" in out and "0 of 2 bounds met." in out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["bench", "--targets", good, str(bad)]) == 2
    assert "--targets" in capsys.readouterr().err
    other = _write(tmp_path, "other.json", {"kind": "conv"})
    assert cli.main(["bench", "--targets", other]) == 2
    assert "not a threefactor bench result" in capsys.readouterr().err
    assert cli.main(["bench", "--targets", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_recorded_bench_file_can_be_judged():
    """The result files RESULTS.md quotes stay readable by the verdict (the JSON schema did not drift)."""
    paths = [p for p in glob.glob(os.path.join(ROOT, "benchmarks", "results", "**", "*.json"), recursive=True)
             if json.load(open(p)).get("kind") in ("update", "step")]
    if not paths:
        pytest.skip("no recorded bench results in this checkout")
    docs = targets.load(paths)
    assert targets.verdicts(docs) and all(r["met"] for r in targets.memory_verdicts(docs))


def test_cli_targets_skips_other_result_files_of_a_glob(tmp_path, capsys):
    """README: ``bench --targets benchmarks/results/*.json``; that folder also holds bench_env.py's JSON."""
    good = _write(tmp_path, "u.json", _doc("update", _update("cupy", "gauss", 1024, 4096, 4096, 1.31, 1.38),
                                           gpu={"name": "Test GPU"}))
    env = _write(tmp_path, "env.json", {"command": "python benchmarks/bench_env.py", "machine": {}, "default": {}})
    assert cli.main(["bench", "--targets", good, env]) == 0
    captured = capsys.readouterr()
    assert "Test GPU" in captured.out and f"skipped {env}" in captured.err
    assert cli.main(["bench", "--targets", env, env]) == 2          # nothing left to judge
    assert "not a threefactor bench result" in capsys.readouterr().err

"""threefactor.threads: the thread settings the library gives its process, and what they change."""
import json
import os
import subprocess
import sys

import pytest

from threefactor import threads
from threefactor.bench.machine import set_threads
from threefactor.bench.envs import clean_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a child: imports FIRST (if any), then threefactor; two GEMMs, then CPU time burnt while it sleeps
_CHILD = """
import sys, time, json
for name in sys.argv[1:]:
    __import__(name)
import threefactor
import numpy as np
a = np.ones((512, 512), np.float32)
burnt = []
for _ in range(3):
    a @ a; a @ a
    c0 = time.process_time(); time.sleep(0.2); burnt.append(time.process_time() - c0)
r = threefactor.threads.report()
r["env"] = {k: __import__("os").environ.get(k) for k in threefactor.threads.DEFAULTS}
r["burnt"] = burnt
print(json.dumps(r))
"""


def _child(*first, **env):
    e = clean_environment(False, env)
    e["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", _CHILD, *first], env=e, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _openblas(report):
    return [p for p in report["pools"] if p["internal_api"] == "openblas"]


def test_import_first_sets_the_defaults_before_blas_loads():
    r = _child()
    assert r["set"] == threads.DEFAULTS and r["env"] == threads.DEFAULTS
    assert r["restarted"] == [] and r["left"] == []          # nothing was loaded before threefactor
    if _openblas(r):
        # OpenBLAS's workers sleep after the GEMMs: no CPU burnt while the process sleeps
        # (with OpenBLAS's default timeout they spin for ~0.1 s after each call)
        assert min(r["burnt"]) < 0.01, r["burnt"]


def test_numpy_imported_first_openblas_is_restarted():
    r = _child("numpy")
    assert r["set"] == threads.DEFAULTS
    if not _openblas(r):
        pytest.skip("numpy's BLAS is not OpenBLAS here")
    assert len(r["restarted"]) >= 1 and all("openblas" in p for p in r["restarted"])
    assert min(r["burnt"]) < 0.01, r["burnt"]


def test_torch_imported_first_is_reported_as_left():
    pytest.importorskip("torch")
    r = _child("torch")
    assert any("OpenMP wait policy" in line for line in r["left"]), r["left"]


def test_user_settings_and_opt_out_are_kept():
    r = _child(OPENBLAS_THREAD_TIMEOUT="8")
    assert r["kept"] == {"OPENBLAS_THREAD_TIMEOUT": "8"} and r["set"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert r["env"]["OPENBLAS_THREAD_TIMEOUT"] == "8"
    r = _child(**{threads.OPT_OUT: "keep"})
    assert r["set"] == {} and r["restarted"] == [] and r["env"] == {k: None for k in threads.DEFAULTS}


def _blas_threads():
    """Threads of numpy's BLAS (scipy may have loaded an OpenBLAS of its own)."""
    pools = [p for p in threads.pools() if p["user_api"] == "blas"]
    return [p["num_threads"] for p in pools if "numpy" in p["filepath"]] or [p["num_threads"] for p in pools]


def test_blas_threads_at_most_is_seen_by_threadpoolctl_and_undone():
    pytest.importorskip("threadpoolctl")
    if threads.openblas_thread_api() is None:
        pytest.skip("no OpenBLAS thread API")
    before = _blas_threads()
    with threads.blas_threads_at_most(1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_set_threads_is_what_threadpoolctl_reports():
    pytest.importorskip("threadpoolctl")
    import numba
    from threefactor.backends.numba import one_numba_thread

    before, numba_before = _blas_threads(), numba.get_num_threads()
    try:
        done = set_threads(1)
        assert done["blas"] == 1 and set(_blas_threads()) == {1} and numba.get_num_threads() == 1
        with one_numba_thread():
            assert numba.get_num_threads() == 1
    finally:
        import threadpoolctl
        threadpoolctl.threadpool_limits(max(before), user_api="blas")   # (every BLAS pool had max threads)
        numba.set_num_threads(numba_before)
    with one_numba_thread():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == numba_before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_threads(0)

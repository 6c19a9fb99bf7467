"""The CuPy backend on the CPU: every GPU test, run against the CuPy emulator.

No GPU has to be present: ``tests/cupy_emulator`` emulates the part of CuPy that
threefactor uses, its CUDA kernels included (compiled with g++ and run block by
block, a block's threads as fibers with real barriers and warp shuffles).  This
test runs ``python -m pytest -m gpu tests/`` with ``THREEFACTOR_EMULATE_CUPY=1``
in a subprocess, so that plain ``python -m pytest -q`` (CI) exercises the CuPy
backend's Python glue and kernels; the emulator's own tests
(``tests/test_cupy_emulator.py``) are GPU tests and run there too.

Skipped (with the reason) where the emulator cannot run: no g++, not x86-64 Linux.
"""
from __future__ import annotations

import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

import pytest

import cupy_emulator

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: What would mean that a GPU test did not run on the emulator.
NOT_EMULATED = re.compile(r"not installed|no GPU|unavailable|not visible", re.IGNORECASE)


def _unusable():
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return f"the CuPy emulator's fibers need x86-64 Linux, not {sys.platform} {platform.machine()}"
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "the CuPy emulator compiles kernels with g++, which is not on PATH"
    return None


def _report(out, limit=12000):
    """The failures of a pytest run, readable: each failure's header and error lines, then the summary."""
    lines = out.splitlines()
    keep = [ln for ln in lines if re.match(r"(_{3,} .* _{3,}|E |FAILED|ERROR|SKIPPED|[^ ].*Error)", ln)]
    text = "\n".join(keep) or "\n".join(lines[-60:])
    return text if len(text) <= limit else text[:limit // 2] + "\n[...]\n" + text[-limit // 2:]


@pytest.mark.skipif(_unusable() is not None, reason=_unusable() or "")
def test_gpu_tests_pass_on_the_emulator():
    if cupy_emulator.active():
        pytest.skip("this session already runs on the CuPy emulator")
    env = dict(os.environ, **{cupy_emulator.ENV: "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                              "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider", "tests/"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    summary = out.strip().splitlines()[-1] if out.strip() else "(no output)"
    assert proc.returncode == 0, (f"GPU tests fail on the CuPy emulator: {summary}\n"
                                  f"rerun: {cupy_emulator.ENV}=1 python -m pytest -q -m gpu tests/\n{_report(out)}")
    not_run = [ln for ln in out.splitlines() if ln.startswith("SKIPPED") and NOT_EMULATED.search(ln)]
    assert not not_run, "GPU tests skipped as if there were no CuPy:\n" + "\n".join(not_run)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    assert counts.get("passed", 0) > 0, summary

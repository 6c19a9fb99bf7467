"""benchmarks/gpu_check.sh rehearsed without a GPU: every step runs on the CuPy emulator with tiny shapes
(GPU_CHECK_DRY=1), so a broken step is found in CI rather than in a GPU session's few minutes."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = ("test_gpu.log", "bench_update_gpu.log", "bench_update_gpu.json", "bench_step_gpu.log",
         "bench_step_gpu.json", "bench_online_gpu.json", "bench_conv_gpu.json", "profile.json")


def test_gpu_check_script_runs_end_to_end(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, GPU_CHECK_DRY="1", OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "cupy_emulator"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == sorted(FILES), made                  # the device tool brings back at most 8 files
    update_log = (tmp_path / "out" / "bench_update_gpu.log").read_text()
    assert "CuPy CPU emulator" in update_log
    assert "== targets" in update_log and "bounds met." in update_log    # the verdict, whatever it is
    step_log = (tmp_path / "out" / "bench_step_gpu.log").read_text()
    assert "== mlp / ours" in step_log
    assert "B = 1, Table 1 MLP online, cupy float32" in step_log and "\nfused " in step_log   # issue 18, B = 1

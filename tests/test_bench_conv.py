"""benchmarks/bench_conv_epoch.py runs end to end on a tiny conv net on the CPU; no timing is asserted."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from threefactor import layer_output, local_objective
from threefactor.rule.rules import Rule

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conv_epoch.py"
_spec = importlib.util.spec_from_file_location("bench_conv_epoch", _PATH)
bce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bce)

TIMES = {"step_ms", "step_iqr_ms", "step_min_ms", "repeats", "epoch_s", "samples_per_s"}


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("autograd", [True, False])
def test_tiny_run_writes_the_json(tmp_path, autograd):
    if autograd and not _has_torch():
        pytest.skip("torch is not installed")
    out = tmp_path / "conv.json"
    argv = ["--arch", "conv8-pool-fc16", "--groups", "4", "--batch", "8", "--steps", "2", "--warmup", "1",
            "--backend", "numpy", "--device", "cpu", "--json", str(out)]
    assert bce.main(argv + ([] if autograd else ["--no-autograd"])) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "conv-epoch" and {"machine", "settings", "command"} <= set(doc)
    rec = doc["results"][0]
    assert {"arch", "blocks", "batch", "groups", "backend", "torch_device", "steps", "epoch_steps", "ours",
            "autograd", "speedup_vs_autograd"} <= set(rec)
    assert rec["blocks"] == [["conv", 8, "max"], ["fc", 16]] and rec["epoch_steps"] == 50_000 / 8
    assert set(rec["ours"]) == TIMES and rec["ours"]["repeats"] == 2
    assert rec["autograd_tf32"] is None and rec["speedup_vs_autograd_tf32"] is None   # a CUDA-only baseline
    if autograd:
        assert set(rec["autograd"]) == TIMES and rec["speedup_vs_autograd"] > 0
    else:
        assert rec["autograd"] is None and rec["speedup_vs_autograd"] is None


def test_torch_layer_loss_is_the_conv_rule_objective():
    """The autograd baseline's conv layer loss equals threefactor's conv objective (float64)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from threefactor.verify import torch_ref as tr

    rule = Rule(kernel="gaussian", sigma=5.0, gamma=2.0, activation="selu", groups=2, p=0.2, delta=1.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3)) / 3
    y = np.array([0, 1, 2, 0, 1, 2])
    Ky = tr._label_kernel(torch, torch.as_tensor(y), 3, rule.label_kernel, torch.float64)
    loss, r = bce.torch_layer(torch, F, torch.as_tensor(x), torch.as_tensor(w), True, "max", rule, Ky, 0.0)
    ref = local_objective(x, w, y, kernel=rule.kernel, sigma=rule.sigma, gamma=rule.gamma,
                          activation=rule.activation, groups=rule.groups, p=rule.p, delta=rule.delta,
                          padding=1, pool="max", backend="numpy", n_classes=3)
    assert float(loss) == pytest.approx(float(ref), rel=1e-10, abs=1e-14)
    out = layer_output(x, w, activation=rule.activation, groups=rule.groups, p=rule.p, delta=rule.delta,
                       divisive=True, padding=1, pool="max", backend="numpy")
    np.testing.assert_allclose(r.numpy(), np.asarray(out), rtol=1e-10, atol=1e-12)


def test_bench_conv_step_swaps_primitives_and_restores_them(capsys):
    pytest.importorskip("numba")
    from threefactor.backends.numba import NumbaBackend
    spec = importlib.util.spec_from_file_location("bench_conv_step", _PATH.parent / "bench_conv_step.py")
    bcs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bcs)
    own = {name: getattr(NumbaBackend, name) for name in ("im2col", "max_pool_rows", "route_rows")}
    bcs.main(["--rounds", "1", "--batch", "8"])
    out = capsys.readouterr().out
    assert "numba (all own primitives)" in out and "numpy pool" in out and "numpy im2col" in out
    assert all(getattr(NumbaBackend, name) is impl for name, impl in own.items())

"""End-to-end training: every Table 1 column learns, resume is bit-for-bit, the CLI explains itself."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.training.presets import COLUMNS, PRESETS, get_preset
from threefactor.training.runs import METRIC_KEYS, RunDir
from threefactor.training.train import build_network, resolve_config, train

from real_data import FULL_FMNIST, SKIP_REASON
from synthetic_data import write_split




@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Synthetic, separable 10-class 'mnist' in IDX files: a noisy binary prototype per class."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    protos = rng.random((10, 28, 28)) < 0.3
    d = root / "mnist"
    d.mkdir()
    for split, n in (("train", 320), ("t10k", 100)):
        y = np.arange(n) % 10
        rng.shuffle(y)
        flip = rng.random((n, 28, 28)) < 0.15
        x = (protos[y] ^ flip) * 200 + rng.integers(0, 50, (n, 28, 28))
        write_split(d, split, x, y)
    return root


def _config(data_root, rule, grouping, **kw):
    opts = dict(dataset="mnist", rule=rule, grouping=grouping, hidden=[32, 32], epochs=4,
                batch_size=32, lr_out=0.05, data_root=str(data_root), backend="numpy")
    if grouping != "plain":
        opts["groups"] = 8
    opts.update(kw)
    return resolve_config(**opts)


def _quiet(_):
    pass


@pytest.mark.parametrize("rule,grouping", COLUMNS, ids=[f"{r}-{g}" for r, g in COLUMNS])
def test_every_column_learns(data_root, tmp_path, rule, grouping):
    # last-layer trains 10 × 32 weights on fixed random features: at lr_out 0.05 it reaches 38-53 %
    # in 4 epochs depending on the seed, at 0.2 it reaches 55-76 % over seeds 0-4
    cfg = _config(data_root, rule, grouping, **({"lr_out": 0.2} if rule == "last-layer" else {}))
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    records = rd.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["test_accuracy"] >= 50.0, records          # chance is 10%
    assert records[-1]["test_accuracy"] > records[0]["test_accuracy"] or records[0]["test_accuracy"] == 100
    # weights moved (hidden ones only where the rule trains them)
    init = build_network(cfg, 784, 10, __import__("threefactor").get_backend("numpy"),
                         np.random.default_rng(cfg["seed"])).parameters()
    params, _, _ = rd.load_checkpoint()
    assert not np.array_equal(params["output.w"], init["output.w"])
    for k in range(2):
        moved = not np.array_equal(params[f"hidden.{k}.w"], init[f"hidden.{k}.w"])
        assert moved == (rule != "last-layer"), f"hidden.{k}.w moved={moved}"
    if rule in ("cossim", "gaussian"):
        obj = records[-1]["local_objective"]
        assert len(obj) == 2 and obj[0] == records[-1]["local_objective_1"]
        assert records[-1]["local_objective_1"] < records[0]["local_objective_1"]   # L decreased


@pytest.mark.parametrize("rule,grouping", [("gaussian", "grp+div"), ("backprop", "plain")])
def test_resume_is_bit_for_bit(data_root, tmp_path, rule, grouping):
    cfg = _config(data_root, rule, grouping, epochs=3, dropout=0.1)
    full = train(cfg, tmp_path / "full", progress=False, log=_quiet)
    part = train(dict(cfg, epochs=1), tmp_path / "part", progress=False, log=_quiet)
    # an interrupted epoch 2 left metrics behind but no checkpoint: resume must drop them
    with open(part.metrics_path, "a") as f:
        f.write(json.dumps(dict(part.read_metrics()[0], epoch=2)) + "\n")
    train(dict(cfg, epochs=3), part.path, resume=True, progress=False, log=_quiet)
    a, oa, ma = full.load_checkpoint()
    b, ob, mb = part.load_checkpoint()
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    for layer in oa:
        for x, y in zip(oa[layer]["buffers"], ob[layer]["buffers"]):
            assert np.array_equal(x, y)
    assert ma["rng_state"] == mb["rng_state"] and mb["epoch"] == 3
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "cpu_seconds")} for r in rs]
    assert strip(full.read_metrics()) == strip(part.read_metrics())


def test_same_seed_same_numbers_other_seed_differs(data_root, tmp_path):
    cfg = _config(data_root, "cossim", "plain", epochs=1)
    r1 = train(cfg, tmp_path / "a", progress=False, log=_quiet).load_checkpoint()[0]
    r2 = train(cfg, tmp_path / "b", progress=False, log=_quiet).load_checkpoint()[0]
    r3 = train(dict(cfg, seed=1), tmp_path / "c", progress=False, log=_quiet).load_checkpoint()[0]
    assert all(np.array_equal(r1[k], r2[k]) for k in r1)
    assert not np.array_equal(r1["hidden.0.w"], r3["hidden.0.w"])


def test_cli_writes_the_contract(data_root, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["train", "--dataset", "mnist", "--rule", "gaussian", "--grouping", "grp+div",
                   "--hidden", "32", "32", "--groups", "8", "--epochs", "2", "--batch-size", "64",
                   "--subset", "200", "--data-root", str(data_root), "--backend", "numpy",
                   "--out", str(out), "--no-progress", "--milestones", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "epoch   1/2" in printed and "samples/s" in printed
    assert f"data: mnist from {data_root}" in printed            # which copy of the data the run read
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "checkpoint.npz", "curves.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "mnist-gaussian-grpdiv" and cfg["lr_local"] == 1.0 and cfg["groups"] == 8
    assert cfg["subset"] == 200 and cfg["p"] == 0.2 and cfg["milestones"] == [1]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines, 1):
        rec = json.loads(line)
        assert set(METRIC_KEYS) <= set(rec)
        assert rec["epoch"] == i and isinstance(rec["epoch"], int)
        assert 0 <= rec["test_accuracy"] <= 100 and rec["seconds"] > 0 and rec["samples_per_s"] > 0
        assert len(rec["local_objective"]) == 2 and "local_objective_2" in rec
    recs = [json.loads(x) for x in lines]
    assert recs[0]["lr_out"] == cfg["lr_out"] and recs[1]["lr_out"] == pytest.approx(cfg["lr_out"] / 4)
    assert recs[1]["lr_local"] == pytest.approx(0.25)
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(METRIC_KEYS) <= set(header) and "local_objective_1" in header
    # resume the finished run for one more epoch through the CLI
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert len(RunDir(out).read_metrics()) == 3
    with pytest.raises(SystemExit, match="cannot change seed"):
        cli.main(["train", "--resume", str(out), "--seed", "3", "--no-progress"])
    with pytest.raises(SystemExit, match="already holds a run"):
        cli.main(["train", "--dataset", "mnist", "--data-root", str(data_root), "--out", str(out),
                  "--hidden", "32", "--groups", "8", "--no-progress"])


@pytest.mark.parametrize("argv,expected", [
    (["--rule", "hebb"], "backprop, last-layer, gaussian, cosine, linear, .*local"),   # and kernels registered since
    (["--grouping", "div"], "did you mean 'grp+div'"),
    (["--grouping", "blocks"], "plain, grp, grp+div"),
    (["--dataset", "cifar100"], "did you mean 'cifar10'"),
    (["--dataset", "imagenet"], "mnist, fmnist, kmnist, cifar10"),
    (["--preset", "fmnist-gaussain-grpdiv"], "did you mean 'fmnist-gaussian-grpdiv'"),
    (["--backend", "tpu"], "numpy, numba, cupy"),
    (["--rule", "backprop", "--grouping", "grp"], "use one of: plain, grp+div"),
    (["--grouping", "plain", "--groups", "4"], "groups needs grouping"),
    (["--hidden", "30", "--groups", "32"], "does not divide"),
    (["--preset", "mnist-cossim", "--rule", "gaussian"], "contradicts preset"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "1"], "batch_size must be >= 2 for the gaussian rule.*--mode online"),
])
def test_bad_input_names_the_choices(argv, expected):
    with pytest.raises(SystemExit, match=expected.replace("+", r"\+")):
        cli.main(["train", "--no-progress", *argv])


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for word in ("gaussian", "cossim", "backprop", "last-layer", "Eq. 9", "grp+div", "example",
                 "--lr-local", "--resume", "--subset", "--milestones"):
        assert word in text, word
    flat = " ".join(text.split())
    # --groups, --lr-local, --lr-out say what they are and where their default comes from
    for option, what in (("--groups C", "number of groups c per hidden layer"),
                         ("--lr-local ETA_L", "eta_l, the local learning rate"),
                         ("--lr-out ETA_F", "eta_f, the learning rate of the output layer")):
        help_text = flat.split(option + " ")[-1][:400]
        assert help_text.startswith(what) and "default from the preset: Table 3" in help_text, help_text
    assert "(preset)" not in flat
    assert "(default sgd;" in flat.split("--optimizer OPTIMIZER ")[-1][:200]
    mode, b3 = flat.split("--mode MODE ")[-1], flat.split("--per-stream-b3 ")[-1]
    from threefactor.training.config import ONLINE_DELAYS, ONLINE_LR_LOCAL
    assert f"lr_local defaults to {ONLINE_LR_LOCAL}" in mode[:500] and "lr_local" not in b3[:100]
    assert f"paired with its stream's {ONLINE_DELAYS} previous ones" in mode[:200]
    examples = text.split("examples:")[1]
    assert not any("  --" in line.strip() for line in examples.splitlines()), examples   # no line joined by '\'


def test_presets_cover_table3():
    assert len(PRESETS) == 40
    p = get_preset("fmnist-gaussian-grpdiv")
    assert (p.lr_out, p.lr_local, p.groups) == (5e-3, 1.0, 32) and "5e-4" in p.note
    assert (get_preset("kmnist-lastlayer-grpdiv").groups, get_preset("kmnist-backprop-grpdiv").groups) == (16, 32)
    assert get_preset("cifar10-cossim-grpdiv").lr_local == 0.1
    assert get_preset("mnist-backprop").lr_local is None and get_preset("mnist-gaussian").groups is None
    cfg = resolve_config()   # the no-argument default
    assert (cfg["dataset"], cfg["rule"], cfg["grouping"], cfg["preset"]) == \
        ("fmnist", "gaussian", "grp+div", "fmnist-gaussian-grpdiv")
    assert cfg["hidden"] == [1024, 1024, 1024] and cfg["batch_size"] == 256 and cfg["epochs"] <= 3


@pytest.mark.skipif(FULL_FMNIST is None, reason=SKIP_REASON)
def test_real_fashion_mnist_one_epoch(tmp_path):
    # cossim (a local rule) is past its start-up within 80 steps (73-75% over seeds 0-2);
    # Gaussian grp+div is still taking off there (41-68%), see RESULTS.md for its full epochs.
    cfg = resolve_config(rule="cossim", grouping="plain", epochs=1, subset=5000, batch_size=64,
                         hidden=[256, 256], seed=0, backend="numpy", data_root=str(FULL_FMNIST))
    rd = train(cfg, tmp_path / "fmnist", progress=False, log=_quiet)
    acc = rd.read_metrics()[-1]["test_accuracy"]
    assert acc > 60.0, acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_fused_equals_numpy_and_pytorch_convention(dtype):
    from threefactor.nn.optim import SGD, multistep_lr
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((16, 8)).astype(dtype)
    grads = [rng.standard_normal((16, 8)).astype(dtype) for _ in range(4)]
    ws = [w0.copy(), w0.copy()]
    opts = [SGD([ws[0]], 0.1, momentum=0.95, weight_decay=1e-3, backend="numba"),   # one fused pass
            SGD([ws[1]], 0.1, momentum=0.95, weight_decay=1e-3, fused=False)]
    ref, buf = w0.astype(np.float64), np.zeros((16, 8))
    for g in grads:
        for opt in opts:
            opt.step([-g], sign=-1.0)            # a descent direction ΔW = -g
        buf = 0.95 * buf + (g + 1e-3 * ref)      # PyTorch: buf = μ buf + (g + wd w); w -= lr buf
        ref = ref - 0.1 * buf
    assert np.array_equal(ws[0], ws[1]) and ws[0].dtype == dtype
    np.testing.assert_allclose(ws[0], ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert [multistep_lr(1.0, e) for e in (1, 50, 51, 75, 76, 90, 91, 100)] == \
        [1, 1, 0.25, 0.25, 0.0625, 0.0625, 0.015625, 0.015625]


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    from threefactor.nn.optim import AdamW
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3))
    tw = torch.tensor(w.copy(), requires_grad=True)
    topt = torch.optim.AdamW([tw], lr=0.01, weight_decay=0.1)
    opt = AdamW([w], 0.01, weight_decay=0.1)
    for _ in range(5):
        g = rng.standard_normal((5, 3))
        tw.grad = torch.tensor(g)
        topt.step()
        opt.step([g])
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule,grouping", [("gaussian", "grp+div"), ("cossim", "grp"), ("backprop", "grp+div")])
def test_numba_backend_trains_like_numpy(data_root, tmp_path, rule, grouping):
    pytest.importorskip("numba")
    # float64: float32 rounding differences between the backends grow during training
    cfg = _config(data_root, rule, grouping, epochs=2, backend="numba", dtype="float64")
    a = train(cfg, tmp_path / "a", progress=False, log=_quiet).load_checkpoint()[0]
    b = train(cfg, tmp_path / "b", progress=False, log=_quiet).load_checkpoint()[0]
    c = train(dict(cfg, backend="numpy"), tmp_path / "c", progress=False, log=_quiet).load_checkpoint()[0]
    for k in a:
        assert a[k].dtype == np.float64
        assert np.array_equal(a[k], b[k]), k                       # deterministic on its backend
        np.testing.assert_allclose(a[k], c[k], rtol=1e-7, atol=1e-9 * np.abs(c[k]).max(), err_msg=k)
    f32 = train(dict(cfg, dtype="float32"), tmp_path / "d", progress=False, log=_quiet)
    assert f32.load_checkpoint()[0]["hidden.0.w"].dtype == np.float32


@pytest.mark.parametrize("rule,grouping", [(r, g) for r, g in COLUMNS if r in ("cosine", "gaussian")])
def test_local_training_equals_pytorch_autograd_formulation(rule, grouping):
    """Five MLP.train_step calls (float64) equal the authors' recipe written with torch autograd:
    per-layer SGD on the layer's pHSIC loss during the forward pass (App. D.1, D.2, D.4)."""
    torch = pytest.importorskip("torch")
    from threefactor.training.presets import GROUPING_P, make_rule
    from threefactor.backends import get_backend
    from threefactor.nn.mlp import MLP
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    m, c = 32, (None if grouping == "plain" else 4)
    net = MLP(20, [16, 16], 10, make_rule(rule, grouping, c), divisive=grouping == "grp+div", dropout=0.0,
              backend=get_backend("numpy"), dtype=np.float64, rng=rng)
    opts = net.make_optimizers(0.7, 5e-3)
    ws = [torch.tensor(layer.w.copy(), requires_grad=True) for layer in net.hidden]
    wo = torch.tensor(net.output.w.copy(), requires_grad=True)
    bo = torch.tensor(net.output.b.copy(), requires_grad=True)
    local = [torch.optim.SGD([w], lr=0.7, momentum=0.95, weight_decay=1e-7) for w in ws]
    final = torch.optim.SGD([wo, bo], lr=5e-3, momentum=0.95, weight_decay=1e-6)
    p = GROUPING_P[grouping]

    def groups(z):
        zg = z.view(z.shape[0], c, -1)
        zc = zg - zg.mean(-1, keepdim=True)
        return zc, ((zc ** 2).sum(-1) + 1.0) / zc.shape[-1]

    def kernel(z):
        v = z
        if c is not None:
            v = groups(z)[1] ** (1 - p)
            v = v - v.mean(-1, keepdim=True)
        if rule == "gaussian":
            return torch.exp(-torch.cdist(v, v) ** 2 / 50.0)
        e = v / torch.sqrt((v ** 2).sum(-1, keepdim=True) + 1e-12)
        return e @ e.T

    def phsic(a, b):
        return ((a - a.mean()) * b).mean()

    for _ in range(5):
        x, y = rng.standard_normal((m, 20)), rng.integers(0, 10, m)
        net.train_step(x, y, opts, rng)
        h, yt = torch.tensor(x), torch.tensor(y)
        yc = F.one_hot(yt, 10).double()
        yc = yc - yc.mean(-1, keepdim=True)
        yc = yc / yc.norm(dim=-1, keepdim=True)
        for w, opt in zip(ws, local):
            opt.zero_grad()
            z = F.leaky_relu(h @ w.T, 0.01)
            K = kernel(z)
            (phsic(K, K) - 2.0 * phsic(yc @ yc.T, K)).backward()
            opt.step()
            h = z.detach()
            if grouping == "grp+div":
                zc, u = groups(h)
                h = (zc / u[..., None] ** p).reshape(z.shape)
        final.zero_grad()
        F.cross_entropy(h @ wo.T + bo, yt).backward()
        final.step()
    for layer, w in zip(net.hidden, ws):
        np.testing.assert_allclose(layer.w, w.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(net.output.w, wo.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(net.output.b, bo.detach().numpy(), rtol=0, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("rule,grouping", [("gaussian", "grp+div"), ("backprop", "grp+div")])
def test_cupy_backend_trains_like_numpy(data_root, tmp_path, rule, grouping):
    from threefactor.backends import BackendUnavailable, get_backend
    try:
        get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(str(exc))
    cfg = _config(data_root, rule, grouping, epochs=2, backend="cupy", dtype="float64", dropout=0.1)
    a = train(cfg, tmp_path / "a", progress=False, log=_quiet).load_checkpoint()[0]
    b = train(cfg, tmp_path / "b", progress=False, log=_quiet).load_checkpoint()[0]
    for k in a:
        assert np.array_equal(a[k], b[k]), k               # deterministic, dropout masks made on the device
    # the same numbers as numpy where no randomness differs (the GPU draws its dropout masks by hashing)
    cfg = dict(cfg, dropout=0.0)
    c = train(cfg, tmp_path / "c", progress=False, log=_quiet).load_checkpoint()[0]
    d = train(dict(cfg, backend="numpy"), tmp_path / "d", progress=False, log=_quiet).load_checkpoint()[0]
    for k in c:
        np.testing.assert_allclose(c[k], d[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_gpu_note(data_root, tmp_path, monkeypatch):
    """A run on a CPU backend says so when CuPy sees a GPU; silent without one."""
    from threefactor.bench import machine
    assert machine.gpu_note(info={}) is None
    monkeypatch.setattr(machine, "gpu_info", lambda: {"name": "NVIDIA H200", "memory_gib": 139.8})
    lines = []
    train(_config(data_root, "gaussian", "grp+div", epochs=1, subset=64), tmp_path / "r", progress=False,
          log=lines.append)
    assert any("--backend cupy" in ln and "NVIDIA H200" in ln for ln in lines), lines
    monkeypatch.setattr(machine, "gpu_info", lambda: None)
    lines = []
    train(_config(data_root, "gaussian", "grp+div", epochs=1, subset=64), tmp_path / "s", progress=False,
          log=lines.append)
    assert not any("GPU is usable" in ln for ln in lines), lines


def test_busy_machine_note(data_root, tmp_path, monkeypatch):
    """A hint to use fewer BLAS threads when the load average says other processes are busy."""
    from threefactor.bench import machine
    assert machine.busy_machine_note(threads=2, load=0.6, cores=2) is None
    assert machine.busy_machine_note(threads=1, load=9.0, cores=2) is None
    note = machine.busy_machine_note(threads=2, load=2.2, cores=2)
    assert "OPENBLAS_NUM_THREADS=1" in note and "2.2" in note
    assert "OPENBLAS_NUM_THREADS=11" in machine.busy_machine_note(threads=16, load=20.0, cores=16)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    monkeypatch.setattr(machine, "blas_threads", lambda: 4)
    lines = []
    train(_config(data_root, "gaussian", "grp+div", epochs=1, subset=64), tmp_path / "r", progress=False,
          log=lines.append)
    assert any("load average 7.0" in ln for ln in lines), lines

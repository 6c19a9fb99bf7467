#!/usr/bin/env python
"""How good are a run's hidden features, apart from its read-out? A fresh linear probe on them.

For each run directory: the network at its last checkpoint computes the features (the last hidden layer's
output, no dropout) of the training and test sets; then

``own``       the test accuracy of the run's own read-out (what the run reports);
``probe``     a fresh softmax read-out trained on the frozen features: SGD with momentum 0.9, batch 256,
              ``--epochs`` epochs, rate :data:`PROBE_RATE` / (the features' mean squared norm), times 0.7
              after each epoch (deterministic: ``--seed``);
``catch-up``  the run's own read-out trained on for ``--catch-up`` epochs with the run's own optimiser
              settings (its lr_out, momentum, weight decay, batch size) on the frozen features.

``probe`` far above ``own`` says the read-out, not the hidden layers, is behind (benchmarks/RESULTS.md,
"Closing the short-run gap").  The numbers are printed and, with ``--json``, written (atomically)::

    python benchmarks/probe_features.py runs/fmnist-gaussian-grpdiv-*
    python benchmarks/probe_features.py RUN --epochs 10 --catch-up 1 --json probe.json
"""
import argparse
import sys

import numpy as np

from threefactor.backends import get_backend
from threefactor.cli.main import at_least
from threefactor.nn.layers import OutputLayer, softmax_cross_entropy
from threefactor.nn.optim import SGD
from threefactor.training.atomic import write_json
from threefactor.training.runs import RunDir
from threefactor.training.train import build_network, load_data


#: The probe's first rate times the features' mean squared norm (then × 0.7 per epoch).
PROBE_RATE = 50.0


def features(net, x, batch=2000):
    """The last hidden layer's output (no dropout) of every row of ``x``, on the host."""
    be = net.backend
    return np.concatenate([be.to_numpy(net.features(be.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)])


def train_readout(w, b, f, y, epochs, lr, momentum, weight_decay=0.0, batch=256, decay=1.0, seed=0):
    """The read-out (w, b) trained in place on features f, labels y: softmax cross-entropy's gradient
    (:func:`threefactor.nn.layers.softmax_cross_entropy`, :meth:`OutputLayer.gradients`) and
    :class:`threefactor.nn.optim.SGD`, the rate times ``decay`` after each epoch; returns (w, b)."""
    be = get_backend("numpy")
    layer, opt = OutputLayer(w, b), SGD([w, b], lr, momentum=momentum, weight_decay=weight_decay, backend=be)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for s in range(0, len(order) - batch + 1, batch):
            i = order[s:s + batch]
            _, dlogits, _ = softmax_cross_entropy(layer.forward(f[i], be), y[i])
            opt.step(list(layer.gradients(dlogits, f[i], be)))
        opt.lr *= decay
    return w, b


def accuracy(w, b, f, y):
    return float((np.argmax(f @ w.T + b, axis=1) == y).mean() * 100)


def probe_run(path, epochs=10, catch_up=1, seed=0, data=None):
    """{"run", "own", "probe", "probe_train", "catch_up": [per epoch], "feature_rms"} of one run directory."""
    rd = RunDir(path)
    cfg = rd.read_config()
    be = get_backend("numpy")
    x_tr, y_tr, x_te, y_te, n = data if data is not None else load_data(cfg, False, None)
    if cfg.get("arch", "mlp") != "mlp":
        raise ValueError(f"{path}: probe_features takes MLP runs (arch 'mlp'), got arch {cfg['arch']!r}")
    net = build_network(dict(cfg, mode="batch", backend="numpy"), x_tr.shape[1], n, be, np.random.default_rng(0))
    params, _, meta = rd.load_checkpoint()
    net.load_parameters(params)
    f_tr, f_te = features(net, x_tr).astype(np.float64), features(net, x_te).astype(np.float64)
    w0, b0 = np.asarray(net.output.w, np.float64), np.asarray(net.output.b, np.float64)
    power = float((f_tr ** 2).sum(axis=1).mean())
    w, b = train_readout(np.zeros_like(w0), np.zeros_like(b0), f_tr, y_tr, epochs, PROBE_RATE / max(power, 1e-12),
                         momentum=0.9, decay=0.7, seed=seed)
    w_own, b_own = w0.copy(), b0.copy()
    catch = []
    for e in range(catch_up):
        train_readout(w_own, b_own, f_tr, y_tr, 1, cfg["lr_out"], cfg["momentum"], cfg["weight_decay_out"],
                      batch=cfg["batch_size"], seed=seed + 1 + e)
        catch.append(accuracy(w_own, b_own, f_te, y_te))
    return {"run": str(path), "epoch": int(meta["epoch"]), "own": accuracy(w0, b0, f_te, y_te),
            "probe": accuracy(w, b, f_te, y_te), "probe_train": accuracy(w, b, f_tr, y_tr), "catch_up": catch,
            "feature_rms": power ** 0.5}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of MLP runs (with a checkpoint)")
    ap.add_argument("--epochs", type=at_least(1, int, "the probe's epochs"), default=10,
                    help="epochs of the fresh probe (default 10)")
    ap.add_argument("--catch-up", dest="catch_up", type=at_least(0, int, "the catch-up epochs"), default=1,
                    help="epochs of the run's own read-out trained on frozen features (default 1; 0: none)")
    ap.add_argument("--seed", type=int, default=0, help="shuffling of the probe's epochs (default 0)")
    ap.add_argument("--json", default=None, help="write the results here (atomically)")
    args = ap.parse_args(argv)
    results, data, key = [], None, None
    print(f"{'run':40s} {'epoch':>5s} {'own %':>7s} {'probe %':>8s} {'catch-up %':>11s} {'feature rms':>11s}")
    for path in args.runs:
        cfg = RunDir(path).read_config()
        if (cfg["dataset"], cfg.get("subset"), cfg.get("validation"), cfg["dtype"]) != key:
            key, data = (cfg["dataset"], cfg.get("subset"), cfg.get("validation"), cfg["dtype"]), None
        data = data or load_data(cfg, False, None)
        r = probe_run(path, args.epochs, args.catch_up, args.seed, data)
        results.append(r)
        catch = " ".join(f"{c:.2f}" for c in r["catch_up"]) or "-"
        print(f"{str(path)[-40:]:40s} {r['epoch']:5d} {r['own']:7.2f} {r['probe']:8.2f} {catch:>11s} "
              f"{r['feature_rms']:11.2f}")
    if args.json:
        write_json(args.json, {"probe_epochs": args.epochs, "catch_up_epochs": args.catch_up, "seed": args.seed,
                               "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

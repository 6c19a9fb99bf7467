#!/usr/bin/env python
"""Online training of the Table 1 MLP on Fashion-MNIST: the two-point rule in place of the batch rule.

The network, data, optimisers, schedule and logging are those of
``threefactor train`` (:mod:`threefactor.training.train`); only the hidden layers change:
:func:`threefactor.nn.online_layer.make_online` makes each one learn by the two-point
rule (Eq. 57-66), with B = batch size streams — row b of a batch is paired with
row b of the previous batch, and ΔW is the mean of the B two-point updates
(the batch rule uses all B² pairs of a batch).  The output layer learns by
cross-entropy as before.  Usage::

    python benchmarks/online_fmnist.py --epochs 1 --hidden 1024 1024 1024
    python benchmarks/online_fmnist.py --batch-mode        # same run with the batch rule, to compare

Writes a run directory (config.json, metrics.jsonl/csv, checkpoint.npz,
curves.png) under --out and prints the test accuracy and time per epoch.
"""
import argparse
import time

import numpy as np

from threefactor.backends import get_backend
from threefactor.nn.online_layer import make_online
from threefactor.training.runs import RunDir
from threefactor.training.train import build_network, load_data, resolve_config, run_epochs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fmnist")
    ap.add_argument("--grouping", default="grp+div", help="plain, grp or grp+div (default grp+div)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024, 1024])
    ap.add_argument("--batch-size", type=int, default=256, help="B streams = training batch size")
    ap.add_argument("--beta", type=float, default=0.01, help="rate of the running average b3 (Eq. 61)")
    ap.add_argument("--shared-b3", action="store_true", help="one b3 for all streams")
    ap.add_argument("--lr-local", type=float, default=None, help="default: the Table 3 preset")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--batch-mode", action="store_true", help="train with the batch rule instead (baseline)")
    ap.add_argument("--out", default=None, help="run directory (default /tmp/online-<dataset>-<time>)")
    args = ap.parse_args(argv)
    cfg = resolve_config(dataset=args.dataset, rule="gaussian", grouping=args.grouping, epochs=args.epochs,
                         hidden=args.hidden, batch_size=args.batch_size, lr_local=args.lr_local,
                         subset=args.subset, seed=args.seed, backend=args.backend)
    cfg["mode"] = "batch" if args.batch_mode else "online"
    if not args.batch_mode:
        cfg["online"] = {"streams": args.batch_size, "beta": args.beta, "shared_b3": args.shared_b3}
    out = args.out or f"/tmp/{cfg['mode']}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    backend = get_backend(cfg["backend"])
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te, n_classes = load_data(cfg, progress=False)
    rng = np.random.default_rng(cfg["seed"])
    net = build_network(cfg, x_tr.shape[1], n_classes, backend, rng)
    if not args.batch_mode:
        make_online(net, streams=args.batch_size, beta=args.beta, shared_b3=args.shared_b3)
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"],
                               optimizer=cfg["optimizer"])
    rd = RunDir(out)
    rd.write_config(cfg)
    print(f"{cfg['mode']} {cfg['preset']}: hidden {cfg['hidden']}, B = {args.batch_size}, "
          f"lr_local {cfg['lr_local']}, lr_out {cfg['lr_out']}, backend {backend.name}, data "
          f"{len(y_tr)} train / {len(y_te)} test, loaded in {time.perf_counter() - t0:.1f}s")
    run_epochs(cfg, rd, net, opts, rng, backend, (x_tr, y_tr, x_te, y_te), progress=False)
    last = rd.read_metrics()[-1]
    print(f"final test accuracy {last['test_accuracy']:.2f}% after {last['epoch']} epoch(s); run dir {rd.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

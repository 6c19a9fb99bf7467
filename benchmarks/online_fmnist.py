#!/usr/bin/env python
"""Online training of the Table 1 MLP on Fashion-MNIST: the two-point rule in place of the batch rule.

Since ``threefactor train --mode online`` exists this script is a short way to call it with the
options of the older online benchmarks, so that it trains exactly what that command trains (per-sample
rates, ``rate_rule: "per-sample"`` in config.json; :mod:`threefactor.training.rates`)::

    python benchmarks/online_fmnist.py --epochs 1                 # = threefactor train --mode online --epochs 1
    python benchmarks/online_fmnist.py --batch-mode --epochs 1    # the batch rule, to compare
    python benchmarks/online_fmnist.py --batch-size 16 --print-command   # show the command, run nothing

Writes a run directory (config.json, metrics.jsonl/csv, checkpoint.npz, curves.png) under --out and
prints the test accuracy of each epoch, as ``threefactor train`` does.
"""
import argparse
import shlex
import sys
import time

from threefactor.cli.main import main as cli_main


def train_args(args):
    """The ``threefactor train`` arguments of this script's options."""
    out = args.out or f"/tmp/{'batch' if args.batch_mode else 'online'}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = ["train", "--dataset", args.dataset, "--rule", "gaussian", "--grouping", args.grouping,
            "--epochs", str(args.epochs), "--hidden", *map(str, args.hidden), "--seed", str(args.seed),
            "--out", out]
    if not args.batch_mode:
        argv += ["--mode", "online", "--streams", str(args.batch_size), "--beta", str(args.beta)]
        if args.per_stream_b3:
            argv.append("--per-stream-b3")
    else:
        argv += ["--batch-size", str(args.batch_size)]
    for flag, value in (("--lr-local", args.lr_local), ("--subset", args.subset), ("--backend", args.backend),
                        ("--data-root", args.data_root)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--dataset", default="fmnist")
    ap.add_argument("--grouping", default="grp+div", help="plain, grp or grp+div (default grp+div)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024, 1024])
    ap.add_argument("--batch-size", type=int, default=256, help="B streams (online) or the batch size (--batch-mode)")
    ap.add_argument("--beta", type=float, default=0.01, help="rate of the running average b3 (Eq. 61)")
    ap.add_argument("--per-stream-b3", action="store_true", help="one b3 per stream (default: one shared b3)")
    ap.add_argument("--lr-local", type=float, default=None,
                    help="default: 0.3 online (per sample, at 256 streams), the Table 3 preset in batch mode")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--data-root", default=None, help="where the dataset is (as threefactor train --data-root)")
    ap.add_argument("--batch-mode", action="store_true", help="train with the batch rule instead (baseline)")
    ap.add_argument("--out", default=None, help="run directory (default /tmp/<mode>-<dataset>-<time>)")
    ap.add_argument("--print-command", action="store_true", help="print the threefactor command and exit")
    args = ap.parse_args(argv)
    command = train_args(args)
    print("threefactor " + shlex.join(command), flush=True)
    if args.print_command:
        return 0
    return cli_main(command + ["--no-progress"])


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce a row of Table 1 / Table 4 (Pogodin & Latham 2020): the 3x1024 MLP, every rule.

Trains each chosen column (rule x grouping) for each seed with its Table 3
preset, writes one run directory per run under ``--out`` and prints the
Markdown table of ``threefactor table --paper`` (mean and max - min over seeds of the
final-epoch test accuracy, each row above the paper's Table 4-5 numbers for it).
Finished runs are skipped, unfinished ones resumed, so the script can be
interrupted and started again.

    python benchmarks/table1.py                          # fmnist, all 10 columns, 1 seed, 100 epochs
    python benchmarks/table1.py --epochs 2 --subset 10000 --columns gaussian-grp+div backprop
    python benchmarks/table1.py --dataset kmnist --seeds 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from threefactor.names import unknown_name
from threefactor.training.presets import (COLUMNS, DATASETS, canonical_grouping, canonical_rule, column_name,
                                           preset_name)
from threefactor.training.report import markdown_table, summarize
from threefactor.training.runs import RunDir
from threefactor.training.train import load_data, resolve_config, train

def parse_column(text):
    """A Table 1 column in any spelling of the one vocabulary -> (rule, grouping): ``gaussian-grp+div``,
    ``gaussian grp+div``, ``cossim-grp``, ``lastlayer-grpdiv``, ``backprop``; an unknown one with the
    nearest columns."""
    words = text.strip().replace(" ", "-").split("-")
    for i in range(1, len(words) + 1):             # the rule is a prefix of words ("last-layer" has a dash)
        try:
            rule = canonical_rule("-".join(words[:i]))
            grouping = canonical_grouping("-".join(words[i:])) if i < len(words) else "plain"
        except ValueError:
            continue
        if (rule, grouping) in COLUMNS:
            return rule, grouping
    names = [f"{r}-{g}" if g != "plain" else r for r, g in COLUMNS]
    raise unknown_name("column", text, names, hint="the columns: " + ", ".join(names))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fmnist", choices=DATASETS)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--columns", nargs="+", default=None, metavar="COLUMN",
                    help="e.g. backprop backprop-grp+div last-layer cosine-grp gaussian-grp+div, any case, old spellings too (cossim, lastlayer, grpdiv) (default: all 10)")
    ap.add_argument("--subset", type=int, default=None, help="train on N samples (quick runs)")
    ap.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths (default 1024 1024 1024)")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--validation", action="store_true")
    ap.add_argument("--out", default="runs/table1", help="folder of run directories")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    try:
        columns = [parse_column(c) for c in args.columns] if args.columns else list(COLUMNS)
    except ValueError as exc:
        ap.error(str(exc))
    out = Path(args.out)
    data, dirs = None, []
    for rule, grouping in columns:
        for seed in args.seeds:
            try:
                cfg = resolve_config(dataset=args.dataset, rule=rule, grouping=grouping, epochs=args.epochs,
                                     seed=seed, subset=args.subset, hidden=args.hidden, backend=args.backend,
                                     data_root=args.data_root, validation=args.validation or None)
            except ValueError as exc:
                ap.error(f"{column_name(rule, grouping)}: {exc}")
            rd = RunDir(out / f"{preset_name(args.dataset, rule, grouping)}-s{seed}")
            dirs.append(rd)
            done = rd.read_metrics()
            if done and done[-1]["epoch"] >= args.epochs:
                print(f"{rd.path}: finished, skipped")
                continue
            if data is None:
                data = load_data(cfg, progress=args.progress, log=print)   # says if it is the bundled sample
                source = {k: cfg[k] for k in ("data", "data_source")}      # what load_data recorded in cfg
            cfg.update(source)
            print(f"== {column_name(rule, grouping)}, seed {seed}: {cfg['preset']} "
                  f"(lr_out {cfg['lr_out']}, lr_local {cfg['lr_local']}, groups {cfg['groups']}) -> {rd.path}")
            t0 = time.perf_counter()
            resume = rd.has_checkpoint()
            if resume:
                cfg = dict(rd.read_config(), epochs=args.epochs)
            elif rd.config_path.is_file() and not rd.metrics_path.exists():
                # this script runs its cells one after another: a config.json with no finished epoch
                # is one of its own runs stopped during epoch 1, not a run still going
                print(f"   {rd.path}: stopped during its first epoch; starting it again")
                rd.config_path.unlink()
            train(cfg, rd.path, resume=resume, progress=args.progress, data=data)
            print(f"   {time.perf_counter() - t0:.0f} s")
    print()
    print(markdown_table(summarize(dirs), paper=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

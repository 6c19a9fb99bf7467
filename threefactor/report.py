"""``threefactor table RUN_DIRS...``: a Table 1-style Markdown summary of training runs.

Each run directory (see :mod:`threefactor.runs`) contributes the test accuracy
of its **final** epoch (the last line of ``metrics.jsonl``; not the best
epoch, which would select on the test set); ``--metric best`` shows the best
epoch instead, for diagnosis.  Runs are grouped by dataset (rows) and
rule/grouping column (columns, in the order of the paper's Table 4); a cell
reads ``mean (max − min)`` over the runs (seeds) in it, like Tables 1 and 5.
A directory without ``config.json`` is searched one level down, so
``threefactor table runs/`` works.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paper_results import PAPER_SEEDS, paper_cell
from .presets import COLUMNS, DATASETS, column_name
from .runs import RunDir

DATASET_TITLES = {"mnist": "MNIST", "fmnist": "fashion-MNIST", "kmnist": "Kuzushiji-MNIST",
                  "cifar10": "CIFAR10"}
METRICS = ("final", "best")


def find_runs(paths):
    """Run directories among ``paths`` (each a run dir or a folder of run dirs)."""
    runs = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            runs.append(RunDir(p))
        elif p.is_dir():
            runs.extend(RunDir(q) for q in sorted(p.iterdir()) if (q / "config.json").is_file())
        else:
            raise ValueError(f"{p}: not a run directory (no config.json) nor a folder of run directories")
    return runs


def summarize(runs, metric="final"):
    """{((dataset, network), column): {"values": [...], "epochs": [...], "planned": [...], "seeds": [...]}}."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of: {', '.join(METRICS)}")
    cells = {}
    for rd in runs:
        try:
            cfg = rd.read_config()
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{rd.path}: unreadable config.json ({exc})") from exc
        records = rd.read_metrics()
        if not records:
            continue
        accs = [r["test_accuracy"] for r in records]
        value = accs[-1] if metric == "final" else max(accs)
        key = ((cfg["dataset"], _network(cfg)), column_name(cfg["rule"], cfg["grouping"]))
        cell = cells.setdefault(key, {"values": [], "epochs": [], "planned": [], "seeds": []})
        cell["values"].append(value)
        cell["epochs"].append(records[-1]["epoch"])
        cell["planned"].append(cfg["epochs"])
        cell["seeds"].append(cfg.get("seed"))
    return cells


def _network(cfg):
    """What besides the dataset tells runs apart in a row: the architecture and the mode."""
    parts = []
    arch = cfg.get("arch", "mlp") or "mlp"
    if arch != "mlp":
        width = cfg.get("width", 1) or 1
        parts.append(arch + (f" ×{width}" if width != 1 else ""))
    if cfg.get("mode", "batch") == "online":
        parts.append("online")
    if cfg.get("batchnorm", False):
        parts.append("batchnorm")
    return ", ".join(parts)


def _paper_text(cell, digits):
    if cell is None:
        return "—"
    mean, spread = cell
    if isinstance(mean, str):
        return mean
    return f"{mean:.{digits}f}" + ("" if spread is None else f" ({spread:.{digits}f}, n={PAPER_SEEDS})")


def markdown_table(cells, metric="final", digits=1, paper=False):
    """Rows per dataset, one column per rule/grouping present, ``mean (max−min)`` per cell; with
    ``paper``, under each row the paper's own numbers for it (:mod:`threefactor.paper_results`)."""
    if not cells:
        return "(no finished epochs in these runs)\n"
    columns = [column_name(r, g) for r, g in COLUMNS if any(k[1] == column_name(r, g) for k in cells)]
    rows = sorted({k[0] for k in cells}, key=lambda r: (DATASETS.index(r[0]), r[1]))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    unfinished = False
    for d in rows:
        row = []
        for col in columns:
            cell = cells.get((d, col))
            if cell is None:
                row.append("—")
                continue
            v = cell["values"]
            mean, spread = sum(v) / len(v), max(v) - min(v)
            mark = ""
            if any(e < p for e, p in zip(cell["epochs"], cell["planned"])):
                mark, unfinished = "*", True
            row.append(f"{mean:.{digits}f} ({spread:.{digits}f}, n={len(v)}){mark}")
        title = DATASET_TITLES[d[0]] + (f" ({d[1]})" if d[1] else "")
        lines.append(f"| {title} | " + " | ".join(row) + " |")
        if paper:
            cited = [_paper_text(paper_cell(d[0], d[1], col), digits) for col in columns]
            if any(c != "—" for c in cited):
                lines.append(f"| {title}, paper | " + " | ".join(cited) + " |")
    epochs = sorted({e for c in cells.values() for e in c["epochs"]})
    what = "final-epoch" if metric == "final" else "best-epoch"
    lines.append("")
    lines.append(f"Mean {what} test accuracy (%) over runs (seeds); in parentheses max − min and the "
                 f"number of runs. Epochs trained: {', '.join(map(str, epochs))}.")
    if unfinished:
        lines.append("* at least one run in this cell stopped before its planned number of epochs.")
    if paper:
        lines.append(f"Rows \"paper\": Pogodin & Latham (2020), App. D Tables 4-5 (MLP) and 7-8 (conv nets), "
                     f"mean over {PAPER_SEEDS} seeds (max − min where the paper gives it), final epoch.")
    return "\n".join(lines) + "\n"


def configure_parser(parser):
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories (or folders holding them), e.g. runs/*")
    parser.add_argument("--metric", choices=METRICS, default="final",
                        help="test accuracy of the final epoch (the paper's) or of the best epoch")
    parser.add_argument("--digits", type=int, default=1, help="decimals shown")
    parser.add_argument("--paper", action="store_true",
                        help="under each row, the paper's numbers for the same cells (Tables 4-5, 7-8)")
    return parser


def run(args):
    try:
        cells = summarize(find_runs(args.runs), args.metric)
    except ValueError as exc:
        raise SystemExit(f"threefactor table: error: {exc}")
    print(markdown_table(cells, args.metric, args.digits, args.paper), end="")
    return 0

"""A Table 1-style Markdown summary of training runs (the command: ``threefactor table RUN_DIRS...``,
:mod:`threefactor.cli.table`).

Each run directory (see :mod:`threefactor.training.runs`) contributes the test accuracy
of its **final** epoch (the last line of ``metrics.jsonl``; not the best
epoch, which would select on the test set); ``--metric best`` shows the best
epoch instead, for diagnosis.  Runs are grouped by dataset (rows) and
rule/grouping column (columns, in the order of the paper's Table 4); a cell
reads ``mean (max − min)`` over the runs (seeds) in it, like Tables 1 and 5.
A directory without ``config.json`` is searched one level down, so
``threefactor table runs/`` works. Runs trained on the bundled 10k sample of
Fashion-MNIST (``"data": "bundled-sample"`` in config.json) get their own row,
titled so.  A sweep's folder (``threefactor sweep``; it holds ``sweep.json``) also gets ``table.md``, ``table.csv`` and ``curves.png`` written into it, the
table with the paper's numbers; ``--csv`` and ``--figure`` write those for any runs.

Only seeds of one configuration are averaged: runs that share a cell but differ
in any other setting of ``config.json`` (say ``hidden``, ``subset`` or
``epochs``; not in :data:`NOT_SETTINGS`, which do not change what is learned)
go to separate rows, whose titles name the settings that tell them apart.  Two
runs of one configuration with the same seed are an error: a repeat is not
another seed.
"""
from __future__ import annotations

import json
from pathlib import Path

from threefactor.training.naming import network_label
from threefactor.training.paper_results import PAPER_SEEDS, paper_cell
from threefactor.data.registry import dataset_title
from threefactor.training.presets import COLUMNS, DATASETS, column_name
from threefactor.training.runs import RunDir

METRICS = ("final", "best")
#: config.json keys that do not change what a run learns: runs that differ only in these (and the
#: seed) are seeds of one configuration.  The backends compute the same update.
NOT_SETTINGS = frozenset({"seed", "data_root", "backend", "eval_batch_size", "version", "preset_note",
                          "data", "data_source"})    # data: part of the row's network (naming.network_label)


def find_runs(paths):
    """Run directories among ``paths`` (each a run dir or a folder of run dirs); ValueError if none.

    Plain files among them are passed over (``runs/*`` also matches log files); a path that does
    not exist is an error."""
    runs = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            runs.append(RunDir(p))
        elif p.is_dir():
            runs.extend(RunDir(q) for q in sorted(p.iterdir()) if (q / "config.json").is_file())
        elif not p.exists():
            raise ValueError(f"{p}: no such run directory or folder of run directories")
    if not runs:
        raise ValueError(f"no run found under {', '.join(map(str, paths))} (a run directory holds "
                         "config.json; a folder is searched one level down)")
    return runs


def _frozen(value):
    """A hashable, comparable stand-in for a config value (lists, dicts)."""
    return json.dumps(value, sort_keys=True)


def _plain(value):
    """A config value as a row title shows it: lists as their items joined by commas."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _read(rd, metric):
    """(config, final-or-best test accuracy, last epoch) of a run; None when no epoch has finished."""
    from threefactor.training.config import upgrade_config
    try:
        cfg = rd.read_config()
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{rd.path}: unreadable config.json ({exc})") from exc
    try:
        cfg = upgrade_config(cfg)      # old names (cossim, grpdiv) and settings recorded since
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{rd.config_path}: {exc}") from None
    missing = [k for k in ("dataset", "rule", "grouping", "epochs") if k not in cfg]
    if missing:
        raise ValueError(f"{rd.config_path}: lacks {', '.join(missing)}; not a threefactor run's config")
    records = rd.read_metrics()
    if not records:
        return None
    try:
        accs = [r["test_accuracy"] for r in records]
        last = records[-1]["epoch"]
    except (KeyError, TypeError):
        raise ValueError(f"{rd.metrics_path}: a record lacks test_accuracy or epoch") from None
    return cfg, (accs[-1] if metric == "final" else max(accs)), last


def summarize(runs, metric="final"):
    """{((dataset, network), column): {"values", "epochs", "planned", "seeds", "runs", "network",
    "split"}}: per cell the runs' values, last and planned epochs, seeds and directories.

    ``network`` is the architecture and mode (:func:`~threefactor.training.naming.network_label`); when the runs of a cell differ in
    a setting (anything in config.json but :data:`NOT_SETTINGS`), every run of that dataset and
    network is told apart by those settings: ``split`` (``"hidden=512, subset=1000"``) joins the
    network in the row key.  ValueError when one configuration has the same seed twice.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of: {', '.join(METRICS)}")
    entries = []
    for rd in runs:
        read = _read(rd, metric)
        if read is None:
            continue
        cfg, value, last = read
        settings = {k: _frozen(v) for k, v in cfg.items() if k not in NOT_SETTINGS}
        entries.append((rd, cfg, (cfg["dataset"], network_label(cfg)),
                        cfg.get("column") or column_name(cfg["rule"], cfg["grouping"]), settings, value, last))
    # the settings that differ between runs of one cell split their (dataset, network) into rows
    by_cell, split = {}, {}
    for entry in entries:
        by_cell.setdefault(entry[2:4], []).append(entry[4])
    for (row, _), settings in by_cell.items():
        keys = set().union(*settings)
        split.setdefault(row, set()).update(
            k for k in keys if len({s.get(k) for s in settings}) > 1)
    cells = {}
    for rd, cfg, (dataset, network), column, _, value, last in entries:
        label = ", ".join(f"{k}={_plain(cfg.get(k))}" for k in sorted(split[(dataset, network)]))
        row = (dataset, ", ".join(part for part in (network, label) if part))
        cell = cells.setdefault((row, column), {"values": [], "epochs": [], "planned": [], "seeds": [],
                                                "runs": [], "network": network, "split": label})
        seed = cfg.get("seed")
        if seed in cell["seeds"]:
            other = cell["runs"][cell["seeds"].index(seed)]
            raise ValueError(f"{other} and {rd.path} are one configuration with the same seed {seed}: a "
                             "repeated run is not another seed; leave one of them out")
        cell["values"].append(value)
        cell["epochs"].append(last)
        cell["planned"].append(cfg["epochs"])
        cell["seeds"].append(seed)
        cell["runs"].append(str(rd.path))
    return cells




def _paper_text(cell, digits):
    if cell is None:
        return "—"
    mean, spread = cell
    if isinstance(mean, str):
        return mean
    return f"{mean:.{digits}f}" + ("" if spread is None else f" ({spread:.{digits}f}, n={PAPER_SEEDS})")


def _row_order(row, cells):
    """Rows sort by dataset (paper order), then network, then the settings that split them."""
    dataset, _ = row
    cell = next(c for (r, _), c in cells.items() if r == row)
    index = DATASETS.index(dataset) if dataset in DATASETS else len(DATASETS)
    return index, dataset, cell["network"], cell["split"]


def markdown_table(cells, metric="final", digits=1, paper=False):
    """Rows per dataset, one column per rule/grouping present, ``mean (max−min)`` per cell; with
    ``paper``, under each row the paper's own numbers for it (:mod:`threefactor.training.paper_results`)."""
    if not cells:
        return "(no finished epochs in these runs)\n"
    columns = [column_name(r, g) for r, g in COLUMNS if any(k[1] == column_name(r, g) for k in cells)]
    columns += sorted({k[1] for k in cells} - set(columns))
    rows = sorted({k[0] for k in cells}, key=lambda r: _row_order(r, cells))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    unfinished = split = False
    for i, d in enumerate(rows):
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
            split = split or bool(cell["split"])
            row.append(f"{mean:.{digits}f} ({spread:.{digits}f}, n={len(v)}){mark}")
        title = dataset_title(d[0]) + (f" ({d[1]})" if d[1] else "")
        lines.append(f"| {title} | " + " | ".join(row) + " |")
        network = _row_order(d, cells)[2]
        if paper and (i + 1 == len(rows) or _row_order(rows[i + 1], cells)[:3] != _row_order(d, cells)[:3]):
            cited = [_paper_text(paper_cell(d[0], network, col), digits) for col in columns]
            if any(c != "—" for c in cited):
                base = dataset_title(d[0]) + (f" ({network})" if network else "")
                lines.append(f"| {base}, paper | " + " | ".join(cited) + " |")
    epochs = sorted({e for c in cells.values() for e in c["epochs"]})
    what = "final-epoch" if metric == "final" else "best-epoch"
    lines.append("")
    lines.append(f"Mean {what} test accuracy (%) over runs (seeds); in parentheses max − min and the "
                 f"number of runs. Epochs trained: {', '.join(map(str, epochs))}.")
    if split:
        lines.append("Runs that differ in a setting besides the seed are in separate rows; the row title "
                     "names the settings that tell them apart.")
    if unfinished:
        lines.append("* at least one run in this cell stopped before its planned number of epochs.")
    if paper:
        lines.append(f"Rows \"paper\": Pogodin & Latham (2020), App. D Tables 4-5 (MLP) and 7-8 (conv nets), "
                     f"mean over {PAPER_SEEDS} seeds (max − min where the paper gives it), final epoch.")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("dataset", "row", "column", "mean", "max_min", "n", "seeds", "epochs", "paper_mean", "paper_max_min")


def csv_table(cells, digits=2):
    """The cells of :func:`summarize` as CSV text: one line per cell, with the paper's numbers where it
    has the cell (:mod:`threefactor.training.paper_results`)."""
    import csv
    import io
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    order = {column_name(r, g): i for i, (r, g) in enumerate(COLUMNS)}
    for (row, column), cell in sorted(cells.items(), key=lambda kv: (_row_order(kv[0][0], cells),
                                                                     order.get(kv[0][1], 99), kv[0][1])):
        v = cell["values"]
        cited = paper_cell(row[0], cell["network"], column)
        paper_mean, paper_spread = cited if cited is not None else ("", None)
        writer.writerow([row[0], row[1], column, round(sum(v) / len(v), digits), round(max(v) - min(v), digits),
                         len(v), " ".join(map(str, cell["seeds"])), " ".join(map(str, sorted(set(cell["epochs"])))),
                         paper_mean, "" if paper_spread is None else paper_spread])
    return buf.getvalue()


#: a folder holding this file is a sweep's output folder (``threefactor sweep``)
SWEEP_FILE = "sweep.json"


def write_sweep_outputs(folder, metric="final", digits=1):
    """Write ``table.md``, ``table.csv`` and ``curves.png`` of the runs under ``folder`` (atomically);
    (the Markdown table with the paper's numbers, [paths written]).  ValueError when no run has
    finished an epoch."""
    from threefactor.training.atomic import atomic_write
    from threefactor.training.cell_curves import plot_cells
    folder = Path(folder)
    cells = summarize(find_runs([folder]), metric)
    if not cells:
        raise ValueError(f"no finished epoch in the runs under {folder}")
    text = markdown_table(cells, metric, digits, paper=True)
    written = []
    for name, content in (("table.md", text), ("table.csv", csv_table(cells))):
        atomic_write(folder / name, lambda f, c=content: f.write(c.encode()))
        written.append(folder / name)
    written.append(plot_cells(cells, folder / "curves.png"))
    return text, written

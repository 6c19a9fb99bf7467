"""A run's learning curves (``curves.png``): accuracies, training loss and local objectives per epoch.

The title names what was run: dataset, network, rule column, the mode (batch of m samples, or online
with B streams), backend and dtype, seed.  When the paper reports a number for the run's cell
(:mod:`threefactor.training.paper_results`: Table 1 / Table 2, or App. D's Tables 4 and 7), the accuracy
panel carries it as a dashed horizontal line labelled with its table.
"""
from __future__ import annotations

import math

from threefactor.training.paper_results import PAPER_SEEDS, paper_cell, paper_table
from threefactor.training.naming import network_label
from threefactor.training.presets import column_name

#: Style of the paper's reference line (tests find it by its label's prefix).
PAPER_LINE = dict(linestyle="--", color="0.35", linewidth=1.2)
PAPER_LABEL = "paper"


def _column(cfg):
    """The run's Table 1 column, "" for a config that lacks rule or grouping."""
    if cfg.get("column"):
        return cfg["column"]
    return column_name(cfg["rule"], cfg["grouping"]) if cfg.get("rule") and cfg.get("grouping") else ""


def mode_text(cfg):
    """``"batch 256"`` or ``"online, 256 streams"`` (the mode of a resolved config)."""
    if cfg.get("mode", "batch") == "online":
        b = cfg.get("streams") or cfg.get("batch_size")
        return f"online, {b} stream{'s' if b != 1 else ''}" if b else "online"
    return f"batch {cfg['batch_size']}" if cfg.get("batch_size") else "batch"


def run_title(cfg):
    """One line naming a run: ``fmnist gaussian grp+div · batch 256 · numba float32 · seed 0``."""
    network = network_label({**cfg, "mode": "batch"})     # architecture (and batchnorm); the mode comes next
    what = " ".join(str(p) for p in (cfg.get("dataset"), network, _column(cfg)) if p)
    backend = " ".join(str(cfg[k]) for k in ("backend", "dtype") if cfg.get(k))
    parts = [what, mode_text(cfg), backend, f"seed {cfg['seed']}" if cfg.get("seed") is not None else ""]
    return " · ".join(p for p in parts if p)


def paper_reference(cfg):
    """(accuracy %, label) of the paper's number for the run's cell, or None where it reports none.

    The cell is the row :mod:`threefactor.training.report` files the run under (dataset, network),
    read as a batch run: the paper reports no online numbers, so an online run is drawn against the
    batch rule's cell and the label says so.  Settings the paper did not use (``--subset``, fewer
    epochs, other hidden sizes) do not remove the line; it is the paper's 5-seed mean all the same.
    """
    dataset, column = cfg.get("dataset"), _column(cfg)
    if not dataset or not column:
        return None
    network = network_label({**cfg, "mode": "batch"})
    cell = paper_cell(dataset, network, column)
    if cell is None or isinstance(cell[0], str):       # none, or a bound such as "<40"
        return None
    rule = "batch rule, " if cfg.get("mode", "batch") == "online" else ""
    return float(cell[0]), (f"{PAPER_LABEL} ({rule}{paper_table(dataset, network, column)}, "
                            f"mean of {PAPER_SEEDS} seeds): {cell[0]:.1f} %")


def _integer_epochs(ax, epochs):
    """Integer epoch ticks that never run together: ±0.5 around a short run (one epoch alone
    otherwise gets the axis 0.95..1.05 and eleven fractional labels)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10], integer=True, min_n_ticks=1))
    finite = [e for e in epochs if e is not None]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = 0.5 if hi - lo < 4 else 0.02 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)


def curves_figure(records, config=None, title=""):
    """The learning curves of ``records`` (metrics.jsonl rows) as a matplotlib Figure (Agg canvas).

    Parameters
    ----------
    records : list of dict
        One per epoch; ``null``/None values (a diverged epoch) are drawn as gaps.
    config : dict, optional
        The run's resolved config: gives the title (:func:`run_title`) and the paper's line
        (:func:`paper_reference`).
    title : str, optional
        Used instead of the config's title when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ep = [r["epoch"] for r in records]

    def values(key):
        return [math.nan if r.get(key) is None else r[key] for r in records]
    n_obj = len(records[-1].get("local_objective") or [])
    fig = Figure(figsize=(12 if n_obj else 8, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if n_obj else 2)
    axes[0].plot(ep, values("test_accuracy"), "o-", label="test")
    axes[0].plot(ep, values("train_accuracy"), "s--", label="train (during epoch)")
    reference = paper_reference(config) if config else None
    if reference is not None:
        axes[0].axhline(reference[0], label=reference[1], **PAPER_LINE)
    axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    axes[0].legend(fontsize="small")
    axes[1].plot(ep, values("train_loss"), "o-")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    if n_obj:
        for k in range(n_obj):
            axes[2].plot(ep, [math.nan if not r.get("local_objective") or r["local_objective"][k] is None
                              else r["local_objective"][k] for r in records], "o-", label=f"layer {k + 1}")
        axes[2].set(xlabel="epoch", ylabel="L = pHSIC(Z,Z) - γ pHSIC(Y,Z)", title="local objectives")
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        _integer_epochs(ax, ep)
    title = title or (run_title(config) if config else "")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

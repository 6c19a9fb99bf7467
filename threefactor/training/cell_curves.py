"""Learning curves of table cells: test accuracy against epoch, mean over seeds with its min-max band.

One panel per table row (dataset, network, settings), one line per cell (rule/grouping column):
the mean over the cell's runs (seeds) at each epoch and a band from the lowest to the highest run.
Used by ``threefactor table --figure`` and at the end of ``threefactor sweep``; one run's own curves
(loss and accuracy per epoch, the paper's number) are :mod:`threefactor.training.curves`.
"""
from __future__ import annotations

import math

from threefactor.data.registry import dataset_title
from threefactor.training.runs import RunDir


def cell_curve(paths):
    """(epochs, mean, low, high) of test accuracy over the runs in ``paths``, per epoch any run has
    (a diverged epoch's null is left out)."""
    per_epoch = {}
    for path in paths:
        for r in RunDir(path).read_metrics():
            if r.get("test_accuracy") is not None:
                per_epoch.setdefault(r["epoch"], []).append(r["test_accuracy"])
    epochs = sorted(per_epoch)
    return (epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs],
            [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs])




def plot_cells(cells, path):
    """Write the figure of :func:`threefactor.training.report.summarize`'s ``cells`` to ``path``
    (PNG, atomically); returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from threefactor.training.atomic import atomic_write
    rows = sorted({row for row, _ in cells})
    ncols = min(2, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(figsize=(6.5 * ncols, 4.2 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, row in zip(axes, rows):
        for (r, column), cell in sorted(cells.items(), key=lambda kv: kv[0][1]):
            if r != row:
                continue
            epochs, mean, low, high = cell_curve(cell["runs"])
            if not epochs:
                continue
            line, = ax.plot(epochs, mean, "o-" if len(epochs) < 30 else "-", ms=3,
                            label=f"{column} (n={len(cell['runs'])})")
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, lw=0)
        title = dataset_title(row[0]) + (f" ({row[1]})" if row[1] else "")
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    fig.suptitle("test accuracy per cell: mean over seeds, band min-max")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    return path

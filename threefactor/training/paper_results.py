"""The paper's reported test accuracies, for side-by-side comparison (``threefactor table --paper``).

Pogodin & Latham (NeurIPS 2020), Appendix D: Table 4 (mean over 5 seeds) and Table 5 (max − min) for
the 3 × 1024 MLP on the four datasets; Table 7 (means) for the conv nets on CIFAR10, with the spreads
of Table 8 where the paper's text is legible (its 1x row only).  Columns are named as
:func:`threefactor.training.presets.column_name` names them; rows as :func:`threefactor.training.report` keys them,
(dataset, network) with network "" for the MLP.
"""
from __future__ import annotations

from threefactor.training.presets import COLUMNS, column_name

_MLP_COLUMNS = [column_name(r, g) for r, g in COLUMNS]
_CONV_COLUMNS = ["backprop", "backprop grp+div", "cosine grp", "cosine grp+div", "gaussian grp",
                 "gaussian grp+div"]

# Table 4 (means) and Table 5 (max − min), columns in presets.COLUMNS order.
_TABLE4 = {
    "mnist": (98.6, 98.4, 92.0, 95.4, 94.9, 95.8, 96.3, 94.6, 98.4, 98.1),
    "fmnist": (90.2, 90.8, 83.3, 85.7, 86.3, 88.7, 88.1, 86.5, 88.6, 88.8),
    "kmnist": (93.4, 93.5, 71.2, 78.2, 80.4, 86.2, 87.2, 80.2, 92.7, 91.1),
    "cifar10": (60.0, 60.3, 39.2, 38.0, 51.1, 52.5, 47.6, 41.4, 48.4, 46.4),
}
_TABLE5 = {
    "mnist": (0.2, 0.1, 0.3, 0.3, 1.4, 0.5, 0.6, 0.2, 0.3, 0.2),
    "fmnist": (0.2, 0.4, 0.3, 0.2, 0.6, 1.1, 0.3, 0.2, 0.6, 0.2),
    "kmnist": (0.3, 0.3, 1.1, 0.8, 1.0, 1.0, 0.9, 1.0, 0.4, 1.2),
    "cifar10": (0.6, 0.9, 1.2, 1.4, 1.4, 2.0, 1.4, 0.5, 1.0, 0.6),
}
# Table 7 (means; "<40": the paper gives only a bound) and Table 8's legible row (1x wide net).
_TABLE7 = {
    "vgg": (91.0, 91.0, 88.8, 89.8, "<40", 86.2),
    "vgg ×2": (91.9, 90.9, 89.4, 91.3, "<40", 90.4),
    "vgg, batchnorm": (94.1, 94.3, 91.3, 90.1, 89.9, 89.4),
    "vgg ×2, batchnorm": (94.3, 94.5, 91.9, 91.0, 91.0, 91.2),
}
_TABLE8 = {"vgg": (0.4, 0.4, 0.7, 0.7, None, 0.9)}

#: {(dataset, network): {column: (mean, max − min or None)}}; a mean may be the string "<40".
PAPER = {(d, ""): {c: (m, s) for c, m, s in zip(_MLP_COLUMNS, _TABLE4[d], _TABLE5[d])} for d in _TABLE4}
PAPER.update({("cifar10", net): {c: (m, s) for c, m, s in zip(_CONV_COLUMNS, means, _TABLE8.get(net, (None,) * 6))}
              for net, means in _TABLE7.items()})
#: Seeds behind every paper number.
PAPER_SEEDS = 5


def paper_cell(dataset, network, column):
    """(mean, max − min or None) the paper reports for this cell, or None where it reports none."""
    return PAPER.get((dataset, network), {}).get(column)


# The main text's tables: Table 1 is Table 4 without the "grp" columns; Table 2 is Table 7's SGD rows
# (1x and 2x wide nets) for backprop and the grp+div kernels.
_TABLE1_COLUMNS = tuple(c for c in _MLP_COLUMNS if not c.endswith(" grp"))
_TABLE2 = {net: ("backprop", "backprop grp+div", "cosine grp+div", "gaussian grp+div") for net in ("vgg", "vgg ×2")}


def paper_table(dataset, network, column):
    """Which of the paper's tables prints this cell: "Table 1" or "Table 2" (main text) where they do,
    else "Table 4" or "Table 7" (App. D); None where the paper reports no number for it."""
    if paper_cell(dataset, network, column) is None:
        return None
    if network == "":
        return "Table 1" if column in _TABLE1_COLUMNS else "Table 4"
    return "Table 2" if column in _TABLE2.get(network, ()) else "Table 7"

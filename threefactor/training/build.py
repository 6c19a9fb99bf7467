"""Networks built from a resolved training config (the conv nets; the MLP: :func:`threefactor.training.train.build_network`)."""
from __future__ import annotations

import numpy as np

from threefactor.nn.convnet import ConvNet
from threefactor.training import presets
from threefactor.training.config import make_rule


def build_convnet(cfg, in_shape, n_classes, backend, rng, rule=None):
    """The ConvNet of a config dict (keys: arch, width, rule, grouping, dropout, dtype; the
    rule's fields as for :func:`threefactor.training.config.make_rule`)."""
    learning = presets.learning_of(cfg["rule"])
    return ConvNet(in_shape, cfg.get("arch", "vgg"), n_classes, rule or make_rule(cfg),
                   divisive=cfg["grouping"] == "grp+div", learning=learning, dropout=cfg["dropout"],
                   backend=backend, dtype=np.dtype(cfg["dtype"]), rng=rng, width=int(cfg.get("width", 1)),
                   batchnorm=bool(cfg.get("batchnorm", False)))

"""The local objectives a run logs: each hidden layer's L (Eq. 9) on one fixed evaluation batch.

``metrics.jsonl``'s ``local_objective`` (and ``local_objective_1``, ...) is, after each epoch,
L_k = pHSIC(Z_k, Z_k) - γ pHSIC(Y, Z_k) of hidden layer k (Eq. 9, 34) on the same
:data:`OBJECTIVE_SAMPLES` training samples every epoch (chosen once from the run's seed, without
touching its random stream), at the epoch's end weights, without dropout (batchnorm: running
statistics).  So L compares across epochs, across batch and online runs and across any number of
streams B: an online step of B = 1 has no pair to compute a batch L from, and the mean of per-step
L over batches of B samples depends on B (Eq. 9 is a mean over the m² pairs of a batch).
"""
from __future__ import annotations

import numpy as np

from threefactor.rule import batchnorm, conv_rule, engine

#: Training samples in the evaluation batch of the logged objectives (fewer if the training set
#: or ``eval_batch_size``, the memory budget of one evaluation batch, is smaller).
OBJECTIVE_SAMPLES = 1024


def objective_indices(cfg, n_train):
    """The evaluation batch: sorted indices into the training set, the same for every epoch of a run
    (and its resumption): drawn from (seed, 18), not from the run's generator."""
    m = min(OBJECTIVE_SAMPLES, int(n_train), int(cfg.get("eval_batch_size") or OBJECTIVE_SAMPLES))
    return np.sort(np.random.default_rng([int(cfg["seed"]), 18]).choice(int(n_train), size=m, replace=False))


def layer_objectives(net, x, labels):
    """[L_1, ..., L_K] (floats) of the hidden layers of a local-learning ``net`` on the batch x, labels.

    No learning and no state change (online streams, batchnorm statistics and the random stream are
    left alone): each layer's forward pass without dropout, then its kernel matrices (Eq. 26, 35) and
    L (Eq. 9) on the backend, one read-back for all layers.
    """
    be = net.backend
    x, labels = net.check_batch(x, labels)
    h, out = x, []
    for layer in net.hidden:
        inp = net._input_of(layer, h) if hasattr(net, "_input_of") else h
        rule = layer.rule
        if hasattr(layer, "padding"):               # a conv layer
            act = conv_rule.activity(rule, inp, layer.w, layer.padding, layer.pool, be, derivatives=False,
                                     bn=layer.bn, train=False)
            m = inp.shape[0]
            lp = engine.represent(rule, None, act.z.reshape(m, -1), None, labels, net.n_classes, be)
            h = lp.output(layer.divisive).reshape(act.z.shape)
        else:
            a, z, fp, _ = batchnorm.linear_forward(be, inp, layer.w, rule.activation, rule.slope,
                                                   getattr(layer, "bn", None), False)
            lp = engine.represent(rule, a, z, fp, labels, net.n_classes, be)
            h = lp.output(layer.divisive)
        out.append(be.layer_objective(lp.K, lp.Ky, rule.gamma))
    return [float(v) for v in be.scalars(out)] if out else []

#!/usr/bin/env python
"""Bring your own kernel: prove its update is −∂L/∂W, then train a network with it.

The paper's rules use a Gaussian or cosine kernel on the layer's representation
v (Eq. 24-26).  Any kernel k(v_i, v_j) gives a local rule: the objective is
still L = pHSIC(Z, Z) − γ pHSIC(Y, Z) (Eq. 9), and threefactor derives the
update from two methods you write,

    matrix(v, xp)          -> K (m, m),   K_ij = k(v_i, v_j)
    pullback(v, K, C, xp)  -> dL/dv (m, d), given C = dL/dK (m, m, symmetric)

(``xp`` is numpy or cupy).  This example writes the inverse multiquadric kernel
k(a, b) = (1 + ‖a − b‖²/s)^(−1/2), which decays polynomially instead of
exponentially, checks it against complex-step derivatives, finite differences
and (if installed) PyTorch autograd with :func:`threefactor.verify.gradcheck.check_rule`,
and trains the Fashion-MNIST MLP with it next to the Gaussian kernel.  Usage::

    python examples/custom_kernel.py                       # check, then 1 epoch of each kernel
    python examples/custom_kernel.py --epochs 3 --subset 20000
"""
import argparse

import numpy as np

import threefactor as tf
from threefactor.verify.gradcheck import check_rule
from threefactor.rule.rules import Rule
from threefactor.nn.mlp import MLP
from threefactor.training.train import make_rule, resolve_config


class InverseMultiquadric:
    """k(a, b) = (1 + ‖a − b‖² / s)^(−1/2).

    With D_ij = ‖v_i − v_j‖² and K = (1 + D/s)^(−1/2): dK_ij/dD_ij = −K_ij³ / (2s), and
    dD_ij/dv_i = 2 (v_i − v_j), so with B = (C + Cᵀ) ⊙ (−K³ / 2s),
    dL/dv = 2 (diag(B·1) − B) v.  Only +, −, ×, / and powers: complex-step safe.
    """

    def __init__(self, s=25.0):
        self.s = s

    def matrix(self, v, xp):
        sq = (v * v).sum(axis=1)
        D = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
        return (1.0 + D / self.s) ** -0.5

    def pullback(self, v, K, C, xp):
        B = (C + C.T) * (-(K ** 3) / (2.0 * self.s))
        return 2.0 * (B.sum(axis=1)[:, None] * v - B @ v)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=1, help="training epochs per kernel")
    p.add_argument("--subset", type=int, default=None, help="train on the first N samples only")
    p.add_argument("--backend", default="numba", choices=["numpy", "numba", "cupy"], help="where to train")
    p.add_argument("--seed", type=int, default=0, help="initial weights, batch order and dropout")
    return p.parse_args(argv)


def check(kernel):
    """check_rule for the plain and the grouped form of the rule (grp and grp+div have the same update:
    divisive normalisation changes only what the layer passes on); prints one line per check."""
    results = []
    for rule in (Rule(kernel=kernel), Rule(kernel=kernel, groups=4, p=0.2)):
        for r in check_rule(rule, raise_on_failure=True):
            verdict = "skipped: " + r.note if r.passed is None else f"max rel. error {r.max_rel_error:.1e}"
            print(f"  {r.variant:38s} {r.backend:6s} {r.method:8s} {verdict}")
            results.append(r)
    return results


def train(kernel, args, ds):
    """Train the preset MLP with ``kernel`` in its hidden layers; returns the test accuracies (%)."""
    cfg = resolve_config(preset="fmnist-gaussian-grpdiv")     # Table 3's settings as a dict
    rule = make_rule(cfg).with_(kernel=kernel)                 # the preset's rule, another kernel
    be = tf.get_backend(args.backend)
    rng = np.random.default_rng(args.seed)
    net = MLP(784, cfg["hidden"], ds.n_classes, rule, divisive=True, dropout=cfg["dropout"],
              backend=be, rng=rng)
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], momentum=cfg["momentum"],
                               weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"])
    X, Y = be.asarray(ds.x_train[:args.subset]), be.asarray(ds.y_train[:args.subset])
    accuracies = []
    for epoch in range(1, args.epochs + 1):
        perm = rng.permutation(len(Y))
        for s in range(0, len(Y), cfg["batch_size"]):
            idx = perm[s:s + cfg["batch_size"]]
            net.train_step(X[idx], Y[idx], opts, rng)
        correct, _ = net.evaluate(be.asarray(ds.x_test), be.asarray(ds.y_test))
        accuracies.append(100.0 * correct / len(ds.y_test))
    return accuracies


def main(argv=None):
    args = parse_args(argv)
    imq = InverseMultiquadric()
    print("check: the explicit update against −∂L/∂W")
    check(imq)
    ds = tf.load_dataset("fmnist", progress=False)
    out = {}
    for name, kernel in (("inverse multiquadric", imq), ("gaussian", "gaussian")):
        out[name] = train(kernel, args, ds)
        print(f"{name:22s} test accuracy per epoch: {', '.join(f'{a:.2f} %' for a in out[name])}")
    return out


if __name__ == "__main__":
    main()

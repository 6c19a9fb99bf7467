#!/usr/bin/env python
"""What the third factor looks like before and after learning (Eq. 12, 22), from the Python API.

Trains the paper's Fashion-MNIST MLP (784-1024-1024-1024-10, Gaussian grp+div,
the ``fmnist-gaussian-grpdiv`` preset) with a plain Python loop over
:meth:`threefactor.nn.mlp.MLP.train_step` (the network of `threefactor train`), and shows, for one fixed test batch
sorted by class, the first hidden layer's

* kernel matrix K_ij = k(v_i, v_j) (Eq. 26) on its group representation v (Eq. 18):
  class blocks appear on the diagonal as the layer learns;
* broadcast third factor A_ij = (2 k̊z_ij − γ k̊y_ij) k_ij / m² (Eq. 12b, 40), the
  part of M every synapse of the layer shares (the grouped rule multiplies it by
  2(1−p)/(σ² g) (v_αi − v_αj) per group α, Eq. 22).  Since −∂L/∂v_i =
  (2/σ²) Σ_j A_ij (v_i − v_j), a negative entry pulls the pair's representations
  together and a positive one pushes them apart;
* centred label kernel k̊y (Eq. 35), what A is steered by, and after training
  the kernel-space error 2k̊z − γk̊y (Eq. 40) that A weighs by K.

before training and after ``--epochs`` epochs, plus the layers' objectives
L_k = pHSIC(Z,Z) − γ pHSIC(Y,Z) (Eq. 9) per epoch.  Usage::

    python examples/third_factor_anatomy.py --epochs 3 --out third_factor.png
    python examples/third_factor_anatomy.py --epochs 1 --subset 2000     # a quick look (~10 s)
"""
import argparse

import numpy as np

import threefactor as tf
from threefactor.rule.engine import layer_pass
from threefactor.rule.objective import layer_objective
from threefactor.rule.third_factor import gaussian_weights
from threefactor.training.train import build_network, resolve_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="training epochs between the two pictures")
    p.add_argument("--subset", type=int, default=None, help="train on the first N samples only")
    p.add_argument("--batch", type=int, default=120, help="samples in the pictured test batch (12 per class)")
    p.add_argument("--backend", default="numba", choices=["numpy", "numba", "cupy"], help="where to train")
    p.add_argument("--seed", type=int, default=0, help="initial weights, batch order and dropout")
    p.add_argument("--out", default="third_factor.png", help="the figure (PNG)")
    args = p.parse_args(argv)
    if args.batch < 10:
        p.error(f"--batch must be >= 10 (at least one test sample per class), got {args.batch}")
    if args.epochs < 0:
        p.error(f"--epochs must be >= 0, got {args.epochs}")
    return args


def pictured_batch(ds, per_class):
    """``per_class`` test samples of every class, sorted by class."""
    idx = np.concatenate([np.flatnonzero(ds.y_test == c)[:per_class] for c in range(ds.n_classes)])
    return ds.x_test[idx], ds.y_test[idx]


def first_layer_matrices(net, x, y):
    """(K, A, k̊y) of the first hidden layer on the batch (x, y), as numpy arrays."""
    be, layer = net.backend, net.hidden[0]
    lp = layer_pass(layer.rule, be.asarray(x), layer.w, be.asarray(y), net.n_classes, be)
    K, Ky = be.to_numpy(lp.K), be.to_numpy(lp.Ky)
    return K, gaussian_weights(K, Ky, layer.rule.gamma), Ky - Ky.mean(), layer.rule.gamma


def train(net, opts, ds, epochs, subset, rng, batch_size):
    """Epochs of the local rule; returns the per-epoch mean objective of each hidden layer."""
    be = net.backend
    x, y = ds.x_train[:subset], ds.y_train[:subset]
    X, Y = be.asarray(x), be.asarray(y)
    history = []
    for epoch in range(1, epochs + 1):
        perm = rng.permutation(len(y))
        sums, n = np.zeros(len(net.hidden)), 0
        for s in range(0, len(y), batch_size):
            idx = perm[s:s + batch_size]
            stats = net.train_step(X[idx], Y[idx], opts, rng)
            sums += [float(o) * len(idx) for o in stats.objectives]
            n += len(idx)
        correct, _ = net.evaluate(be.asarray(ds.x_test), be.asarray(ds.y_test))
        history.append(sums / n)
        print(f"epoch {epoch}: test accuracy {100.0 * correct / len(ds.y_test):.2f} %, "
              f"L = {', '.join(f'{o:.3e}' for o in history[-1])}")
    return np.array(history)


def plot(before, after, history, labels, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 8), constrained_layout=True)
    edges = np.flatnonzero(np.diff(labels)) + 0.5
    for row, (name, (K, A, kyc, gamma)) in enumerate((("before", before), ("after", after))):
        lim = np.abs(A).max()
        if row == 0:
            third = kyc, "centred label kernel k̊y (Eq. 35)"
        else:
            third = 2 * (K - K.mean()) - gamma * kyc, f"2k̊z − γk̊y (Eq. 40), {name}"
        lim3 = np.abs(third[0]).max()
        for ax, mat, title, kw in (
                (axes[row, 0], K, f"K = k(v_i, v_j), {name}", dict(cmap="viridis")),
                (axes[row, 1], A, f"third factor A (Eq. 12b), {name}: blue pulls, red pushes",
                 dict(cmap="RdBu_r", vmin=-lim, vmax=lim)),
                (axes[row, 2], third[0], third[1], dict(cmap="RdBu_r", vmin=-lim3, vmax=lim3))):
            im = ax.imshow(mat, **kw)
            for e in edges:
                ax.axhline(e, color="k", lw=0.3)
                ax.axvline(e, color="k", lw=0.3)
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8)
    same = labels[:, None] == labels[None, :]
    ax = axes[0, 3]
    for name, (K, A, _, _) in (("before", before), ("after", after)):
        m2 = A.size
        ax.hist([m2 * A[same].ravel(), m2 * A[~same].ravel()], bins=40, histtype="step",
                label=[f"same class, {name}", f"other class, {name}"])
    ax.set_title("m² A per pair (< 0: pull, > 0: push)")
    ax.legend(fontsize=8)
    ax = axes[1, 3]
    for k in range(history.shape[1]):
        ax.plot(np.arange(1, len(history) + 1), history[:, k], marker="o", label=f"layer {k + 1}")
    ax.set_xlabel("epoch")
    ax.set_title("L = pHSIC(Z,Z) − γ pHSIC(Y,Z) (Eq. 9)")
    ax.legend()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main(argv=None):
    args = parse_args(argv)
    cfg = resolve_config(preset="fmnist-gaussian-grpdiv")     # Table 3's settings as a dict
    ds = tf.load_dataset("fmnist", progress=False)
    be = tf.get_backend(args.backend)
    rng = np.random.default_rng(args.seed)
    net = build_network(cfg, 784, ds.n_classes, be, rng)       # the MLP of `threefactor train`
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"])
    xb, yb = pictured_batch(ds, args.batch // ds.n_classes)
    before = first_layer_matrices(net, xb, yb)
    history = train(net, opts, ds, args.epochs, args.subset, rng, cfg["batch_size"])
    after = first_layer_matrices(net, xb, yb)
    for name, (K, A, kyc, gamma) in (("before", before), ("after", after)):
        same = yb[:, None] == yb[None, :]
        print(f"{name}: mean K same class {K[same].mean():.5f}, other {K[~same].mean():.5f}; "
              f"L on the pictured batch {float(layer_objective(K, kyc, gamma)):.3e}")
    plot(before, after, history, yb, args.out)
    return before, after, history


if __name__ == "__main__":
    main()

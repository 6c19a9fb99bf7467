"""A dataset of your own, in one function: registered by name, then trained like a built-in.

    python examples/my_dataset.py                        # trains the MLP on it for one epoch
    python examples/my_dataset.py --epochs 3 --out runs/blobs --backend numba

The loader returns pre-processed images (N, C, H, W) and integer labels 0 .. n_classes-1.
A file works without any code: ``threefactor train --dataset data.npz`` reads an .npz with
x_train, y_train, x_test, y_test (or a folder of IDX files, or of CIFAR-10 batches).
"""
import argparse

import numpy as np

import threefactor as tf
from threefactor.training.train import resolve_config, train


@tf.register_dataset("blobs", image_shape=(1, 4, 4), n_classes=3, title="Blobs")
def blobs(root=None, download=True, progress=True):
    """Three noisy prototypes of 4×4 images, 600 training and 150 test samples."""
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(3, 1, 4, 4))
    y = rng.integers(0, 3, 750)
    x = (protos[y] + 0.5 * rng.normal(size=(750, 1, 4, 4))).astype(np.float32)
    return x[:600], y[:600], x[600:], y[600:]


def main(out=None, epochs=1, backend="numpy"):
    cfg = resolve_config(dataset="blobs", rule="gaussian", grouping="grp+div", hidden=[32, 32], groups=4,
                         lr_local=0.5, lr_out=0.05, batch_size=50, epochs=epochs, backend=backend)
    run = train(cfg, out, progress=False)
    return run.read_metrics()[-1]["test_accuracy"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Train the MLP on the 'blobs' dataset registered above.",
                                 allow_abbrev=False)
    ap.add_argument("--out", default=None, help="run directory (default: a new folder under ./runs)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    ap.add_argument("--backend", default="numpy", help="numpy (default), numba or cupy")
    args = ap.parse_args()
    print(f"test accuracy {main(args.out, args.epochs, args.backend):.1f} % (run directory: "
          f"{args.out or 'under ./runs'})")

"""A training run on disk: config, per-epoch metrics, checkpoints and a plot.

Layout of a run directory::

    config.json      the fully resolved configuration (every hyperparameter)
    metrics.jsonl    one JSON object per epoch (keys in METRIC_KEYS, and more)
    metrics.csv      the same as CSV (scalar columns only)
    checkpoint.npz   weights, optimiser buffers, epoch, RNG state, config
    curves.png       learning curves

``metrics.jsonl`` keys are a contract: ``epoch`` (1-based int), ``train_loss``,
``train_accuracy`` and ``test_accuracy`` (percent), ``seconds`` (training time
of that epoch, wall clock), ``samples_per_s``, ``cpu_seconds`` (process CPU time
of that epoch's training, all threads: on a shared machine it shows how much of
``seconds`` was ours), ``lr_out``, ``lr_local`` and, for local
rules, ``local_objective`` (a list, one mean L_k per hidden layer) plus
``local_objective_1`` ... ``local_objective_K``.  ``train_loss`` and
``train_accuracy`` are running means over the epoch's mini-batches as they were
learned (dropout on); ``test_accuracy`` is measured after the epoch without
dropout, on the test set, or on the held-out 10% with ``--validation``.

Checkpoints are written atomically: to a temporary file in the same
directory, flushed and fsynced, then renamed over ``checkpoint.npz`` with
:func:`os.replace`.  A crash during the write leaves the previous checkpoint
intact.  ``checkpoint.npz`` holds arrays under ``param/<name>`` and
``opt/<layer>/<i>`` and a JSON string ``meta`` (epoch, RNG state, optimiser
steps and learning rates, config).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write as _atomic_write

METRIC_KEYS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "seconds",
               "samples_per_s", "lr_out", "lr_local")
CHECKPOINT = "checkpoint.npz"


def _write_npz(f, arrays):
    """Serialise ``arrays`` (name -> numpy array) as an uncompressed .npz into ``f``."""
    np.savez(f, **arrays)


class RunDir:
    """A run directory (created if needed)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self):
        return self.path / "config.json"

    @property
    def metrics_path(self):
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self):
        return self.path / CHECKPOINT

    # -- config ----------------------------------------------------------
    def write_config(self, config: dict):
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        _atomic_write(self.config_path, lambda f: f.write(text.encode()))

    def read_config(self) -> dict:
        if not self.config_path.is_file():
            raise ValueError(f"{self.path}: not a run directory (no config.json)")
        return json.loads(self.config_path.read_text())

    # -- metrics ---------------------------------------------------------
    def read_metrics(self) -> list:
        """Every epoch's record from metrics.jsonl (an empty list if there is none)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:   # a line cut by a crash
                    break
        return records

    def append_metrics(self, record: dict):
        """Append one epoch to metrics.jsonl (fsynced) and rewrite metrics.csv."""
        missing = [k for k in METRIC_KEYS if k not in record]
        if missing:
            raise ValueError(f"metrics record lacks {', '.join(missing)}")
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.write_csv()

    def keep_metrics_upto(self, epoch: int):
        """Drop records after ``epoch`` (after a resume from an older checkpoint)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        text = "".join(json.dumps(r) + "\n" for r in records)
        _atomic_write(self.metrics_path, lambda f: f.write(text.encode()))
        self.write_csv()

    def write_csv(self):
        records = self.read_metrics()
        columns = []
        for r in records:
            for k, v in r.items():
                if k not in columns and not isinstance(v, (list, dict)):
                    columns.append(k)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        _atomic_write(self.path / "metrics.csv", lambda f: f.write(buf.getvalue().encode()))

    # -- checkpoints -----------------------------------------------------
    def save_checkpoint(self, params: dict, optimizers: dict, meta: dict):
        """Write weights, optimiser buffers and ``meta`` (JSON-able) atomically.

        Parameters
        ----------
        params : {name: numpy array}
        optimizers : {layer: {"buffers": [numpy arrays], "steps": int, "lr": float}}
        meta : dict with at least ``epoch``, ``rng_state`` and ``config``
        """
        arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
        opt_meta = {}
        for layer, state in optimizers.items():
            for i, buf in enumerate(state["buffers"]):
                arrays[f"opt/{layer}/{i}"] = np.asarray(buf)
            opt_meta[layer] = {"n_buffers": len(state["buffers"]), "steps": state["steps"], "lr": state["lr"]}
        arrays["meta"] = np.array(json.dumps({**meta, "optimizers": opt_meta}))
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.checkpoint_path, lambda f: _write_npz(f, arrays))

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def load_checkpoint(self):
        """(params {name: array}, optimizers {layer: state}, meta) from checkpoint.npz."""
        if not self.has_checkpoint():
            raise ValueError(f"{self.path}: no {CHECKPOINT} to resume from")
        try:
            with np.load(self.checkpoint_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
                optimizers = {}
                for layer, om in meta.pop("optimizers").items():
                    bufs = [z[f"opt/{layer}/{i}"] for i in range(om["n_buffers"])]
                    optimizers[layer] = {"buffers": bufs, "steps": om["steps"], "lr": om["lr"]}
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{self.checkpoint_path}: unreadable checkpoint ({exc})") from exc
        return params, optimizers, meta

    # -- plot ------------------------------------------------------------
    def plot(self, title=""):
        """Write curves.png: accuracies, training loss and local objectives per epoch."""
        records = self.read_metrics()
        if not records:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        ep = [r["epoch"] for r in records]
        n_obj = len(records[-1].get("local_objective") or [])
        fig = Figure(figsize=(12 if n_obj else 8, 3.6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3 if n_obj else 2)
        axes[0].plot(ep, [r["test_accuracy"] for r in records], "o-", label="test")
        axes[0].plot(ep, [r["train_accuracy"] for r in records], "s--", label="train (during epoch)")
        axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        axes[0].legend()
        axes[1].plot(ep, [r["train_loss"] for r in records], "o-")
        axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
        if n_obj:
            for k in range(n_obj):
                axes[2].plot(ep, [r["local_objective"][k] for r in records], "o-", label=f"layer {k + 1}")
            axes[2].set(xlabel="epoch", ylabel="L = pHSIC(Z,Z) - γ pHSIC(Y,Z)", title="local objectives")
            axes[2].legend()
        from matplotlib.ticker import MaxNLocator
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        out = self.path / "curves.png"
        _atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=90))
        return out

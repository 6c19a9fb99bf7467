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

Non-finite numbers (an epoch that diverged) are written as ``null``: every
line is strict JSON.  A row with ``"diverged": true`` is the epoch where
training stopped because its loss or weights were no longer finite.

Checkpoints are written atomically: to a temporary file in the same
directory, flushed and fsynced, then renamed over ``checkpoint.npz`` with
:func:`os.replace`.  A crash during the write leaves the previous checkpoint
intact.  A new run claims its directory race-free (:func:`claim_run_dir`,
:func:`claim_new_run_dir`): two runs never share one.  ``checkpoint.npz`` holds arrays under ``param/<name>`` and
``opt/<layer>/<i>`` and a JSON string ``meta`` (epoch, RNG state, optimiser
steps and learning rates, config).
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from threefactor.training.atomic import atomic_create as _atomic_create
from threefactor.training.atomic import atomic_write as _atomic_write
from threefactor.training.atomic import dumps as _dumps
from threefactor.training.atomic import json_safe

METRIC_KEYS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "seconds",
               "samples_per_s", "lr_out", "lr_local")
CHECKPOINT = "checkpoint.npz"
#: Files whose presence means a directory already holds a run.
RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT)
#: Keys every checkpoint's ``meta`` holds.
CHECKPOINT_META = ("epoch", "rng_state", "optimizers")


def _metrics_line(record):
    """One metrics.jsonl line: strict JSON, non-finite numbers as null."""
    return _dumps(json_safe(record)) + "\n"


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
    @staticmethod
    def _config_text(config):
        return _dumps(config, indent=2, sort_keys=True) + "\n"

    def write_config(self, config: dict):
        """(Re)write config.json atomically (strict JSON: ValueError on NaN/Inf)."""
        text = self._config_text(config)
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.config_path, lambda f: f.write(text.encode()))

    def create_config(self, config: dict):
        """Write config.json only if there is none: FileExistsError if another run has it.

        This is how a new run claims an existing directory (see :func:`claim_run_dir`).
        """
        text = self._config_text(config)
        _atomic_create(self.config_path, lambda f: f.write(text.encode()))

    def read_config(self) -> dict:
        """config.json as a dict; ValueError naming the file if it is missing or not a JSON object."""
        if not self.config_path.is_file():
            raise ValueError(f"{self.path}: not a run directory (no config.json)")
        try:
            text = self.config_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.config_path}: cannot read it ({exc})") from None
        if not text.strip():
            raise ValueError(f"{self.config_path}: empty file, expected the run's settings as a JSON object")
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_path}: expected a JSON object of settings, found "
                             f"{type(config).__name__}")
        return config

    def holds_run(self) -> bool:
        """Whether the directory already holds (the start of) a run: config, metrics or checkpoint."""
        return any((self.path / name).exists() for name in RUN_FILES)

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
            f.write(_metrics_line(record))
            f.flush()
            os.fsync(f.fileno())
        self.write_csv()

    def keep_metrics_upto(self, epoch: int):
        """Drop records after ``epoch`` (after a resume from an older checkpoint)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        text = "".join(_metrics_line(r) for r in records)
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
        arrays["meta"] = np.array(_dumps({**meta, "optimizers": opt_meta}))
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.checkpoint_path, lambda f: _write_npz(f, arrays))

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def load_checkpoint(self):
        """(params {name: array}, optimizers {layer: state}, meta) from checkpoint.npz.

        ValueError naming the file and what is wrong if it is missing, empty, truncated, or
        lacks a part (``meta`` must hold ``epoch``, ``rng_state`` and ``optimizers``).
        """
        path = self.checkpoint_path
        if not self.has_checkpoint():
            raise ValueError(f"{self.path}: no {CHECKPOINT} to resume from (no epoch of this run finished)")
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty file (0 bytes)")
            with np.load(path, allow_pickle=False) as z:
                if "meta" not in z.files:
                    raise ValueError("no 'meta' entry (epoch, RNG state, optimisers)")
                meta = json.loads(str(z["meta"]))
                if not isinstance(meta, dict):
                    raise ValueError(f"'meta' is a JSON {type(meta).__name__}, expected an object")
                missing = [k for k in CHECKPOINT_META if k not in meta]
                if missing:
                    raise ValueError(f"'meta' lacks {', '.join(missing)}")
                if isinstance(meta["epoch"], bool) or not isinstance(meta["epoch"], int) or meta["epoch"] < 1:
                    raise ValueError(f"'meta' epoch is {meta['epoch']!r}, expected an integer >= 1")
                if not isinstance(meta["rng_state"], dict):
                    raise ValueError("'meta' rng_state is not a generator state (a JSON object)")
                params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
                optimizers = {}
                for layer, om in meta.pop("optimizers").items():
                    bufs = [z[f"opt/{layer}/{i}"] for i in range(om["n_buffers"])]
                    optimizers[layer] = {"buffers": bufs, "steps": om["steps"], "lr": om["lr"]}
        except zipfile.BadZipFile:
            raise ValueError(f"{path}: truncated or not an .npz file (not a readable zip archive); "
                             f"the run cannot be resumed from it") from None
        except EOFError:
            raise ValueError(f"{path}: truncated file (it ends before its first array)") from None
        except KeyError as exc:
            raise ValueError(f"{path}: incomplete checkpoint: entry {exc} is missing") from None
        except (OSError, ValueError, TypeError, AttributeError, zlib.error) as exc:
            raise ValueError(f"{path}: unreadable checkpoint ({exc})") from None
        return params, optimizers, meta

    # -- plot ------------------------------------------------------------
    def plot(self, title="", config=None):
        """Write curves.png (:mod:`threefactor.training.curves`); returns its path, None before any epoch.

        ``config`` (default: this run's config.json, when readable) titles the figure with the run's
        mode and backend and draws the paper's number for its cell; ``title`` replaces that title.
        """
        records = self.read_metrics()
        if not records:
            return None
        from threefactor.training.curves import curves_figure
        if config is None and self.config_path.is_file():
            try:
                config = self.read_config()
            except ValueError:          # an unreadable config costs the title, not the plot
                config = None
        fig = curves_figure(records, config, title)
        out = self.path / "curves.png"
        _atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=90))
        return out


# -- claiming a run directory ------------------------------------------------

def _dir_error(path, exc, flag):
    if isinstance(exc, (FileExistsError, NotADirectoryError)) or exc.errno in (errno.EEXIST, errno.ENOTDIR):
        what = "exists and is not a directory" if path.exists() and not path.is_dir() else \
            "has a part that is not a directory"
        return ValueError(f"{flag} {path}: {what}; expected a directory for the run")
    return ValueError(f"{flag} {path}: cannot create the run directory ({exc.strerror or exc})")


def _taken(rd, flag):
    if rd.has_checkpoint():
        return ValueError(f"{flag} {rd.path} already holds a run; resume it with --resume {rd.path} or choose "
                          f"another {flag}")
    return ValueError(f"{flag} {rd.path} already holds a run that has not finished an epoch (no {CHECKPOINT}): "
                      f"it may still be running; if it is not, remove {rd.path}, or choose another {flag}")


def claim_run_dir(path, config, *, flag="--out"):
    """Make ``path`` a new run's directory and write its ``config.json``, race-free.

    ``path`` may exist (an empty or unrelated folder) as long as it holds no run
    (:data:`RUN_FILES`); config.json is created exclusively (:meth:`RunDir.create_config`),
    so of two runs started on one directory at once exactly one wins.  Returns
    ``(RunDir, created)``, ``created`` saying whether the directory was made here.
    ValueError naming ``flag`` otherwise.
    """
    rd = RunDir(path)
    path = rd.path
    created = False
    try:
        if not path.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
                created = True
            except FileExistsError:
                if not path.is_dir():
                    raise
    except OSError as exc:
        raise _dir_error(path, exc, flag) from None
    try:
        if rd.holds_run():
            raise _taken(rd, flag)
        try:
            rd.create_config(config)
        except FileExistsError:
            raise _taken(rd, flag) from None
        except OSError as exc:
            raise ValueError(f"{flag} {path}: cannot write config.json there ({exc.strerror or exc})") from None
    except BaseException:
        if created:                 # give back the directory this claim made
            _remove_empty(path)
        raise
    return rd, created


def claim_new_run_dir(base, config, *, flag="--out", tries=1000):
    """A fresh run directory ``base``, or ``base-2``, ``base-3``, ... if taken: made with
    :func:`os.mkdir` (which fails if the name exists), so runs started at the same moment with
    the same name never share one.  Returns ``(RunDir, True)`` with config.json written."""
    base = Path(base)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _dir_error(base.parent, exc, flag) from None
    for i in range(1, tries + 1):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise _dir_error(path, exc, flag) from None
        rd = RunDir(path)
        try:
            rd.create_config(config)
        except FileExistsError:    # someone claimed it with an explicit --out in between
            continue
        except BaseException as exc:
            _remove_empty(path)    # the directory this claim made, left empty
            if isinstance(exc, OSError):
                raise ValueError(f"{flag} {path}: cannot write config.json there ({exc.strerror or exc})") from None
            raise
        return rd, True
    raise ValueError(f"{flag}: {base} and its next {tries - 1} numbered variants are all taken")


def _remove_empty(path):
    """Remove the folder ``path`` if it is empty (a claim's directory given back)."""
    try:
        Path(path).rmdir()
    except OSError:
        pass


def release_run_dir(rd, created):
    """Undo :func:`claim_run_dir` for a run that recorded no epoch: remove its config.json and, if
    the claim made the directory, the directory when empty (so the same command can start again)."""
    if rd.metrics_path.exists() or rd.has_checkpoint():
        return False
    try:
        rd.config_path.unlink()
    except FileNotFoundError:
        pass
    if created:
        _remove_empty(rd.path)
    return True

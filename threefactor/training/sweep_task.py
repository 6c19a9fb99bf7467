"""One run of a sweep, as a worker executes it: skip, train or resume, from what its directory holds.

:func:`run_state` reads a run directory without changing it (the sweep plans with it, and
``--dry-run`` shows it); :func:`run_one` is the task a Dask worker runs.  A run directory is an
ordinary ``threefactor train`` run directory plus ``sweep.log`` (the run's log lines and one line
per attempt: host, pid, time).  Nothing here deletes or rewrites a run that finished an epoch,
except what ``threefactor train --resume`` itself does (it drops metrics rows newer than the
checkpoint, which it then recomputes).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threefactor.training.runs import RunDir

#: config.json keys that may differ between a run on disk and the spec's run (do not change what is
#: learned, or may change on resume: epochs)
IGNORED = frozenset({"data_root", "backend", "eval_batch_size", "version", "preset_note", "epochs",
                     "data", "data_source"})   # which copy of the data a run read: recorded when it starts
#: run statuses: to train (new, restart: no epoch finished, resume), finished (done, diverged)
TODO, FINISHED = ("new", "restart", "resume"), ("done", "diverged")


class RunConflict(ValueError):
    """A directory holds a run the spec's run would overwrite."""


@dataclass
class State:
    """What a run directory holds: ``status`` (see :data:`TODO`, :data:`FINISHED`), the epoch saved
    in its checkpoint, and a human-readable detail."""

    status: str
    epoch: int = 0
    detail: str = ""


def _plain(value):
    return json.loads(json.dumps(value))


def differences(saved, cfg):
    """Settings (``key: on disk vs spec``) in which a saved config differs from ``cfg``."""
    keys = sorted((set(saved) | set(cfg)) - IGNORED)
    return [f"{k} {saved.get(k)!r} on disk, {cfg.get(k)!r} in the spec" for k in keys
            if _plain(saved.get(k)) != _plain(cfg.get(k))]


def checkpoint_epoch(rd):
    """The epoch saved in ``rd``'s checkpoint (0: none), reading only its ``meta`` entry."""
    if not rd.has_checkpoint():
        return 0
    try:
        with np.load(rd.checkpoint_path, allow_pickle=False) as z:
            return int(json.loads(str(z["meta"]))["epoch"])
    except Exception:           # unreadable: a resume will say what is wrong with it
        return -1


def saved_config(rd):
    """``rd``'s config.json in today's names (as ``threefactor train --resume`` reads it)."""
    from threefactor.training.naming import upgrade_config
    return upgrade_config(rd.read_config())


def run_state(path, cfg):
    """The :class:`State` of run directory ``path`` for the resolved config ``cfg``.

    RunConflict when it holds a run of another configuration, or more epochs than ``cfg`` asks.
    """
    rd = RunDir(path)
    if not rd.config_path.is_file():
        if rd.metrics_path.exists() or rd.has_checkpoint():
            raise RunConflict(f"{rd.path}: holds metrics or a checkpoint but no config.json, so not a run "
                              f"this sweep can continue; move it away")
        return State("new")
    saved = saved_config(rd)
    diff = differences(saved, cfg)
    if diff:
        raise RunConflict(f"{rd.path}: holds a run of another configuration ({'; '.join(diff[:3])}"
                          f"{' ...' if len(diff) > 3 else ''}); it is never overwritten: give another --out, "
                          f"or move it away")
    records = rd.read_metrics()
    if records and records[-1].get("diverged"):
        return State("diverged", checkpoint_epoch(rd), f"diverged in epoch {records[-1].get('epoch')}")
    epoch = checkpoint_epoch(rd)
    if epoch > cfg["epochs"]:
        raise RunConflict(f"{rd.path}: has trained {epoch} epochs, more than the spec's epochs = {cfg['epochs']}; "
                          f"give epochs >= {epoch}, or another --out")
    if epoch == cfg["epochs"]:
        last = records[-1].get("test_accuracy") if records else None
        return State("done", epoch, "finished" + (f", test {last:.2f}%" if isinstance(last, float) else ""))
    if epoch:
        return State("resume", epoch, f"resumes after epoch {epoch}" if epoch > 0 else "unreadable checkpoint")
    return State("restart", 0, "started before, no epoch finished: starts again")


# -- on the worker -----------------------------------------------------------

_DATA = {}


def _data(cfg, log):
    """The run's data, kept for the next run of this worker process when it needs the same."""
    from threefactor.training.train import load_data
    key = json.dumps([cfg[k] for k in ("dataset", "data_root", "validation", "subset", "dtype")]
                     + [cfg.get("arch", "mlp") == "mlp"])
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_data(cfg, progress=False, log=log)
    return _DATA[key]


def holds_lock(lock, token):
    """Whether the sweep lock file ``lock`` still names the sweep ``token``."""
    try:
        return json.loads(Path(lock).read_text()).get("token") == token
    except (OSError, ValueError):
        return False


def _clear_unstarted(rd):
    """Files of a run that recorded no checkpoint (killed during its first epoch): it starts again."""
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "curves.png"):
        try:
            (rd.path / name).unlink()
        except FileNotFoundError:
            pass


def run_one(path, cfg, lock=None, token=None, threads=None):
    """Train, resume or skip the run in ``path`` (the task of one run on a worker); a result dict.

    ``status`` is done, diverged or stopped (the sweep that started it is gone: its ``lock`` no
    longer holds ``token``; the run stops after the epoch it is in).  Any other error is raised,
    and the sweep records the run as failed.  ``threads``: BLAS and Numba threads of this run.
    """
    from threefactor.training.config import _validate, validate_saved
    from threefactor.training.loop import TrainingDiverged, TrainingInterrupted
    from threefactor.training.train import train
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rd = RunDir(path)
    result = {"host": socket.gethostname(), "pid": os.getpid()}
    with open(path / "sweep.log", "a", buffering=1) as f:
        def log(line):
            f.write(f"{line}\n")
            if lock is not None and not holds_lock(lock, token):
                raise KeyboardInterrupt
        log(f"# {datetime.datetime.now().isoformat(timespec='seconds')} attempt: host {result['host']} "
            f"pid {result['pid']}")
        state = run_state(path, cfg)
        result.update(state=state.status, from_epoch=max(state.epoch, 0))
        if state.status in FINISHED:
            return dict(result, status=state.status, detail=state.detail)
        if threads:
            from threefactor.bench.machine import set_threads
            set_threads(threads)
        try:
            data = _data(cfg, log)
            if state.status == "resume":
                saved = saved_config(rd)
                validate_saved(saved, rd.config_path)
                saved["epochs"] = cfg["epochs"]
                _validate(saved)
                train(saved, path, resume=True, progress=False, log=log, data=data)
            else:
                if state.status == "restart":
                    _clear_unstarted(rd)
                train(cfg, path, progress=False, log=log, data=data)
        except TrainingDiverged as exc:
            return dict(result, status="diverged", detail=str(exc))
        except TrainingInterrupted:
            return dict(result, status="stopped", detail="its sweep stopped; it resumes from its checkpoint")
    records = rd.read_metrics()
    last = records[-1]["test_accuracy"] if records else None
    return dict(result, status="done", detail=f"test {last:.2f}%" if last is not None else "finished")

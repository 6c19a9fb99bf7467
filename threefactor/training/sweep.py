"""``threefactor sweep SPEC.toml`` / ``threefactor.sweep(spec)``: many ``train`` runs on Dask.

A spec (:mod:`threefactor.training.sweep_spec`) names runs: ``[base]`` options, ``[axes]``
multiplied out, ``seeds``.  Every run is resolved and checked before anything trains, then
executed as one Dask task (:func:`threefactor.training.sweep_task.run_one`) in its own ordinary
run directory ``OUT/<run name>``.  Re-running a spec skips finished runs and resumes interrupted
ones from their checkpoints (bit for bit the numbers of an uninterrupted run); a run whose
worker dies is started again elsewhere, from its last checkpoint, up to ``retries`` times; a run
that diverges is recorded as diverged and not retried.  A finished run is never overwritten.

Python use::

    from threefactor import sweep
    result = sweep("benchmarks/sweeps/example.toml", out="sweeps/example")
    result.ok, result.counts          # True, {"done": 4}

Only this module (and :mod:`threefactor.training.sweep_cluster`) imports Dask, and only when a
sweep executes (``pip install -e ".[sweep]"``).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from threefactor.training.atomic import atomic_create, atomic_write, write_json
from threefactor.training.sweep_filter import select
from threefactor.training.sweep_spec import SpecError, check_resolved, expand, read_spec, resolve, train_parser
from threefactor.training.sweep_task import FINISHED, TODO, RunConflict, run_one, run_state

LOCK = ".sweep.lock"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the runs stopped, their checkpoints kept; the same command resumes."""


@dataclass
class SweepResult:
    """What a sweep did: ``runs`` [{name, path, status, detail, trained}], ``out``, ``dry_run``."""

    out: Path
    runs: list = field(default_factory=list)
    dry_run: bool = False

    @property
    def counts(self):
        return dict(Counter(r["status"] for r in self.runs))

    @property
    def ok(self):
        """True when every run finished or diverged."""
        return all(r["status"] in FINISHED for r in self.runs)

    def summary(self):
        c = Counter(r["status"] for r in self.runs)
        now = sum(r.get("trained", False) and r["status"] == "done" for r in self.runs)
        parts = [f"{c['done']} done ({now} trained now, {c['done'] - now} already finished)",
                 f"{c['diverged']} diverged", f"{c['failed']} failed"]
        parts += [f"{n} {s}" for s, n in c.items() if s not in ("done", "diverged", "failed")]
        return f"{len(self.runs)} runs: " + ", ".join(parts)


def plan(spec, out, only=()):
    """(runs, states) of ``spec`` under ``out``: every run resolved and its directory read, nothing
    written.  SpecError for a bad spec, an invalid run or a directory holding another run."""
    spec = read_spec(spec)
    parser = train_parser()
    runs = select(resolve(expand(spec, parser), parser), only)
    if not runs:
        raise SpecError(f"no run of {spec.source} matches --only {' '.join(only)}")
    check_resolved(runs)
    states, conflicts = [], []
    for run in runs:
        try:
            states.append(run_state(Path(out) / run.name, run.config))
        except (RunConflict, ValueError) as exc:
            conflicts.append(str(exc))
    if conflicts:
        raise SpecError("\n  ".join([f"{len(conflicts)} run directories cannot be used (nothing was trained):"]
                                    + conflicts[:5] + ([f"... and {len(conflicts) - 5} more"]
                                                       if len(conflicts) > 5 else [])))
    return runs, states


def _describe(cfg):
    net = (f"hidden {'x'.join(map(str, cfg['hidden']))}" if cfg.get("hidden")
           else f"arch {cfg.get('arch')} x{cfg.get('width', 1)}")
    return (f"{cfg['dataset']} {cfg['column']}, {net}, lr_out {cfg['lr_out']:g}"
            + (f", lr_local {cfg['lr_local']:g}" if cfg.get("lr_local") is not None else "")
            + (f", groups {cfg['groups']}" if cfg.get("groups") else "")
            + (", batchnorm" if cfg.get("batchnorm") else "") + (", online" if cfg.get("mode") == "online" else "")
            + f", {cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}, {cfg['backend']}")


def _take_lock(out, token):
    """Claim ``out`` for this sweep (``.sweep.lock``); SpecError while another live sweep holds it."""
    lock = Path(out) / LOCK
    doc = {"token": token, "host": socket.gethostname(), "pid": os.getpid(),
           "started": datetime.datetime.now().isoformat(timespec="seconds")}
    text = json.dumps(doc).encode()
    try:
        atomic_create(lock, lambda f: f.write(text))
        return lock
    except FileExistsError:
        pass
    try:
        held = json.loads(lock.read_text())
    except (OSError, ValueError):
        held = {}
    alive = True
    if held.get("host") == doc["host"]:
        try:
            os.kill(int(held.get("pid", -1)), 0)
        except (ProcessLookupError, ValueError):
            alive = False
        except PermissionError:
            pass
    if alive:
        raise SpecError(f"{out} is being swept by pid {held.get('pid')} on {held.get('host')} (since "
                        f"{held.get('started')}); wait for it, or if that sweep is gone remove {lock}")
    atomic_write(lock, lambda f: f.write(text))       # a sweep that died without cleaning up
    return lock


def _release_lock(lock, token):
    try:
        if json.loads(lock.read_text()).get("token") == token:
            lock.unlink()
    except (OSError, ValueError):
        pass


def _failure(exc, retries):
    from distributed import KilledWorker
    if isinstance(exc, KilledWorker):
        return f"its worker died {retries + 1} times (at most --retries {retries} restarts): {exc}"
    return f"{type(exc).__name__}: {exc}"


def sweep(spec, out=None, *, workers=None, threads_per_run=1, scheduler=None, runs_per_gpu=None, only=(),
          dry_run=False, retries=3, progress=True, log=print, table=True):
    """Run every run of ``spec`` (a TOML path or dict) under ``out``; a :class:`SweepResult`.

    Parameters
    ----------
    spec : str, Path or dict
        The sweep (see :mod:`threefactor.training.sweep_spec`).
    out : str or Path
        Folder of run directories (default ``sweeps/<spec file name>``).
    workers, threads_per_run : int
        Local CPU cluster: worker processes (default: cores // threads_per_run) and BLAS/Numba
        threads per run (default 1).
    scheduler : str
        Address of a running Dask scheduler to use instead of a local cluster.
    runs_per_gpu : int
        Runs sharing one GPU at once (CuPy runs; Dask resource ``GPU``).
    only : list of "KEY=VALUE"
        Keep the runs with these settings (one key given twice: either value).
    dry_run : bool
        Resolve and list the runs, train nothing.
    retries : int
        Restarts of a run whose worker died (from its last checkpoint).
    table : bool
        At the end write ``table.md``, ``table.csv`` and ``curves.png`` under ``out`` and log the table.

    Raises SpecError (a ValueError) for a bad spec before anything trains, SweepInterrupted on Ctrl-C.
    """
    if out is None:
        if not isinstance(spec, (str, os.PathLike)):
            raise SpecError("out: give the folder for the run directories (out=...)")
        out = Path("sweeps") / Path(spec).stem
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"out (--out) {out}: is a file; expected a folder for the run directories")
    for name, value, low in (("workers", workers, 1), ("threads_per_run", threads_per_run, 1),
                             ("runs_per_gpu", runs_per_gpu, 1), ("retries", retries, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")
    runs, states = plan(spec, out, only)
    gpu = any(r.config.get("backend") == "cupy" for r in runs)
    if runs_per_gpu is not None and not gpu:
        raise SpecError("runs_per_gpu (--runs-per-gpu) needs GPU runs: set backend = \"cupy\" in the spec")
    if gpu and scheduler is None and not dry_run:
        from threefactor.training.sweep_cluster import gpu_count
        if gpu_count() == 0:
            raise SpecError("the sweep has runs with backend = \"cupy\" but no GPU is visible here: run it on "
                            "a GPU machine, or give --scheduler ADDRESS of a cluster with GPU workers")
    result = SweepResult(out, [dict(name=r.name, path=str(out / r.name), status=s.status, detail=s.detail,
                                    trained=False) for r, s in zip(runs, states)], dry_run)
    todo = [(run, rec) for run, s, rec in zip(runs, states, result.runs) if s.status in TODO]
    if dry_run:
        width = max(len(r.name) for r in runs)
        log(f"{len(runs)} runs under {out}:")
        for run, s in zip(runs, states):
            log(f"  {s.status:<8} {run.name:<{width}}  {_describe(run.config)}")
        log(f"would train {len(todo)} ({', '.join(f'{n} {k}' for k, n in Counter(s.status for s in states if s.status in TODO).items()) or 'none'}), "
            f"skip {len(runs) - len(todo)} (finished or diverged); nothing was trained (--dry-run)")
        return result
    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    lock = _take_lock(out, token)
    try:
        if isinstance(spec, (str, os.PathLike)):
            text = Path(spec).read_text()
            atomic_write(out / "sweep.toml", lambda f: f.write(text.encode()))
        skipped = len(runs) - len(todo)
        if skipped:
            log(f"{skipped} of {len(runs)} runs already finished or diverged: skipped")
        if todo:
            try:
                _execute(todo, out, lock, token, workers=workers, threads_per_run=threads_per_run,
                         scheduler=scheduler, gpu=gpu, runs_per_gpu=runs_per_gpu, retries=retries,
                         progress=progress, log=log)
            except SweepInterrupted as exc:
                exc.result = result
                log(f"interrupted: {result.summary()}; the runs keep their checkpoints: run the same command "
                    f"again to resume them")
                raise
    finally:
        _release_lock(lock, token)
        try:
            write_json(out / "sweep.json", {"spec": str(spec) if isinstance(spec, (str, os.PathLike)) else None,
                                            "summary": result.counts, "runs": result.runs})
        except OSError:
            pass
    log(result.summary())
    for rec in result.runs:
        if rec["status"] not in FINISHED:
            log(f"  {rec['status']}: {rec['name']}: {rec['detail']} (log: {Path(rec['path']) / 'sweep.log'})")
    if table:
        from threefactor.training.report import write_sweep_outputs
        try:
            text, written = write_sweep_outputs(out)
            log(text.rstrip("\n"))
            log(f"written: {', '.join(map(str, written))}")
        except ValueError as exc:
            log(f"no table: {exc}")
    return result


def _execute(todo, out, lock, token, *, workers, threads_per_run, scheduler, gpu, runs_per_gpu, retries,
             progress, log):
    """Submit one task per run and follow them to the end (records each run's status in place)."""
    from distributed import TimeoutError as DaskTimeout
    from distributed import wait
    from tqdm.auto import tqdm
    from threefactor.training.sweep_cluster import connect, dashboard, running, task_resources
    with connect(len(todo), scheduler=scheduler, workers=workers, threads_per_run=threads_per_run, gpu=gpu,
                 runs_per_gpu=runs_per_gpu, retries=retries) as client:
        info = client.scheduler_info()
        n_workers = len(info.get("workers", {}))
        log(f"dask: {'scheduler ' + scheduler if scheduler else 'local cluster'}, {n_workers} worker"
            f"{'s' if n_workers != 1 else ''}; dashboard: {dashboard(client)}")
        futures = {}
        for run, rec in todo:
            f = client.submit(run_one, str(out / run.name), run.config, str(lock.resolve()), token,
                              threads_per_run, key=f"{run.name}-{token[:8]}", pure=False,
                              resources=task_resources(run.config, runs_per_gpu))
            futures[f] = (run, rec)
        pending = set(futures)
        counts = Counter()
        bar = tqdm(total=len(todo), unit="run", desc="runs", disable=None if progress else True,
                   file=sys.stderr)
        say = bar.write if not bar.disable else log
        try:
            while pending:
                try:
                    done, pending = wait(pending, timeout=1, return_when="FIRST_COMPLETED")
                    pending = set(pending)
                except (TimeoutError, DaskTimeout):      # the same class from Python 3.11 on
                    done = ()
                for f in done:
                    run, rec = futures[f]
                    if f.status == "finished":
                        res = f.result()
                        status = res["status"] if res["status"] in FINISHED else "failed"
                        rec.update(status=status, detail=res["detail"], trained=True, host=res["host"])
                    else:
                        rec.update(status="failed", detail=_failure(f.exception(), retries), trained=True)
                    counts[rec["status"]] += 1
                    bar.update(1)
                    say(f"[{sum(counts.values())}/{len(todo)}] {rec['status']}: {run.name}: {rec['detail']}")
                busy = running(client)
                bar.set_postfix_str(f"done {counts['done']}, running {busy if busy is not None else '?'}, "
                                    f"failed {counts['failed']}, diverged {counts['diverged']}")
        except KeyboardInterrupt:
            _release_lock(lock, token)          # runs still going elsewhere stop after their epoch
            client.cancel(list(pending))
            for f in pending:
                futures[f][1].update(status="interrupted", detail="stopped by Ctrl-C; rerun the sweep to resume it")
            raise SweepInterrupted() from None
        finally:
            bar.close()

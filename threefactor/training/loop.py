"""The epochs of a run: train, test, check that it stayed finite, record, checkpoint (``threefactor train``).

:func:`run_epochs` drives a network built by :func:`threefactor.training.train.build_network` through
epochs ``start+1 .. epochs`` of a resolved config, writing each epoch into a
:class:`threefactor.training.runs.RunDir`: the metrics row first, then the checkpoint (both atomic).
An epoch whose loss or weights are no longer finite ends the run with
:class:`TrainingDiverged`, keeping the last finite checkpoint; Ctrl-C ends it with
:class:`TrainingInterrupted`, which says which epoch was running and which is saved.
"""
from __future__ import annotations

import time

import numpy as np

from threefactor.rule.online import NonFiniteError
from threefactor.nn.optim import multistep_lr
from threefactor.training.rates import rate_scale
from threefactor.training.objectives import layer_objectives, objective_indices


_ONLINE = "online/"   # checkpoint keys of the online streams' state (previous sample, b3)


def _online_state(net):
    return {f"{_ONLINE}{k}/{key}": v for k, layer in enumerate(net.hidden) if hasattr(layer, "online")
            for key, v in layer.online.state().items()}


def _load_online_state(net, arrays):
    for k, layer in enumerate(net.hidden):
        if hasattr(layer, "online"):
            prefix = f"{_ONLINE}{k}/"
            layer.online.load_state({key[len(prefix):]: v for key, v in arrays.items() if key.startswith(prefix)})


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: still a KeyboardInterrupt, telling where the run stands.

    ``epoch``: the epoch that was running (None: before training started); ``saved``: the
    last epoch in checkpoint.npz (0: none); ``path``: the run directory (None if no directory
    was kept).
    """

    def __init__(self, epoch, saved, path):
        super().__init__(epoch, saved, path)
        self.epoch, self.saved, self.path = epoch, saved, path

    def message(self):
        """The one line ``threefactor train`` prints."""
        during = "before training started" if self.epoch is None else f"during epoch {self.epoch}"
        if self.saved and self.path is not None:
            return (f"interrupted {during}; the last finished epoch ({self.saved}) is saved in {self.path}; "
                    f"resume with: threefactor train --resume {self.path}")
        return f"interrupted {during}; no epoch had finished, so nothing was saved"


class TrainingDiverged(ValueError):
    """The loss or the weights stopped being finite (an exploding learning rate)."""


def _epoch_sums(backend, losses, hits, objectives, sizes):
    """(Σ loss_b·m_b, Σ hits_b, [Σ L_k,b·m_b per layer k]) of an epoch's steps, from the per-step
    0-d arrays: one read-back per kind (:meth:`scalars`), summed on the host in float64."""
    m = np.asarray(sizes, dtype=np.float64)
    layers = len(objectives[0]) if objectives else 0
    obj = backend.scalars([o for step in objectives for o in step]).reshape(len(objectives), layers)
    return (float(backend.scalars(losses) @ m), int(backend.scalars(hits).sum()),
            [float(obj[:, k] @ m) for k in range(layers)])


def run_epochs(cfg, rd, net, opts, rng, backend, data, start=0, *, progress=True, log=print):
    """Epochs ``start+1 .. cfg["epochs"]``: train, test, checkpoint, log, plot.

    An epoch whose loss, local objectives or weights are not finite is recorded (non-finite
    values as null, ``diverged: true``), its weights are not saved, and :class:`TrainingDiverged`
    is raised.  Ctrl-C raises :class:`TrainingInterrupted` (the files stay consistent: each is
    written atomically, metrics before the checkpoint).
    """
    x_tr, y_tr, x_te, y_te = data
    arrays = (backend.asarray(x_tr), backend.asarray(y_tr), backend.asarray(x_te), backend.asarray(y_te))
    idx = objective_indices(cfg, len(y_tr))       # the fixed evaluation batch of the logged objectives
    idx = backend.asarray(idx)
    arrays += (arrays[0][idx], arrays[1][idx])
    augment = _augmenter(cfg, backend) if cfg.get("augment") else None
    last_plot = time.perf_counter()
    saved, epoch = start, None
    try:
        for epoch in range(start + 1, cfg["epochs"] + 1):
            try:
                with _FloatingPointNotes() as fp_notes:
                    record, params, states = _train_epoch(cfg, net, opts, rng, backend, arrays, augment, epoch,
                                                          progress)
            except NonFiniteError as exc:       # an online step met NaN/Inf mid-epoch: the run diverged
                raise TrainingDiverged(_diverged_message(cfg, rd, epoch, [f"{exc.what} during the epoch"],
                                                         net.learning)) from None
            bad = _non_finite(record, params, states)
            if not bad:     # a diverged epoch's overflow warnings are its clear error below; others are kept
                fp_notes.warn(epoch)
            if bad:
                record["diverged"] = True
            # metrics first: a kill between the two leaves a record newer than the checkpoint,
            # which --resume drops and recomputes (the other order would lose the record)
            rd.append_metrics(record)
            if not bad:     # a diverged epoch's weights are not saved: the last good checkpoint stays
                rd.save_checkpoint(params, states, dict(epoch=epoch, rng_state=rng.bit_generator.state,
                                                        config=cfg))
                saved = epoch
            if bad or epoch == cfg["epochs"] or time.perf_counter() - last_plot > 60:   # plotting: ~0.5 s
                rd.plot(config=cfg)      # titled with mode and backend, the paper's cell drawn
                last_plot = time.perf_counter()
            log(_epoch_line(cfg, record))
            if bad:
                raise TrainingDiverged(_diverged_message(cfg, rd, epoch, bad, net.learning))
    except KeyboardInterrupt:
        raise TrainingInterrupted(epoch, saved, rd.path) from None


class _FloatingPointNotes:
    """NumPy's floating-point warnings (overflow, invalid value, divide by zero) of one epoch, held back.

    A diverging run overflows in its matrix products before the epoch's end finds the NaN and says
    so clearly (:class:`TrainingDiverged`); NumPy's raw RuntimeWarnings would come first. Within the
    context, errors NumPy would warn about are recorded instead (modes other than 'warn', e.g. a
    user's 'raise', stay as they are); :meth:`warn` then gives each kind once as a RuntimeWarning,
    for an epoch that stayed finite.
    """

    def __init__(self):
        self.seen = {}

    def _record(self, kind, flag):
        self.seen[kind] = self.seen.get(kind, 0) + 1

    def __enter__(self):
        modes = {k: ("call" if v == "warn" else v) for k, v in np.geterr().items()}
        self._state = np.errstate(call=self._record, **modes)
        self._state.__enter__()
        return self

    def __exit__(self, *exc):
        return self._state.__exit__(*exc)

    def warn(self, epoch):
        import warnings
        for kind, n in self.seen.items():
            warnings.warn(f"{kind} encountered {n} time(s) in NumPy operations during epoch {epoch} "
                          f"(the epoch stayed finite)", RuntimeWarning, stacklevel=3)


def _train_epoch(cfg, net, opts, rng, backend, arrays, augment, epoch, progress):
    """Train and test one epoch; (metrics record, host parameters, host optimiser states)."""
    from tqdm.auto import tqdm
    X, Y, Xt, Yt, Xo, Yo = arrays
    n, bs = len(Y), cfg["batch_size"]
    host_index = backend.xp is np
    lr_out = multistep_lr(cfg["lr_out"], epoch, cfg["milestones"], cfg["lr_factor"])
    lr_local = None if cfg["lr_local"] is None else \
        multistep_lr(cfg["lr_local"], epoch, cfg["milestones"], cfg["lr_factor"])
    scale = rate_scale(cfg)                 # online per-sample rates: lr x B/256 per step of B streams
    for name, opt in opts.items():
        opt.lr = scale * (lr_out if name == "output" or net.learning == "backprop" else lr_local)
    perm = rng.permutation(n)
    if not host_index:    # the epoch's order uploaded once: a pageable copy per step would wait for the GPU
        perm = backend.asarray(perm)
    # per-step statistics stay where they were computed (0-d arrays) and are summed once per epoch,
    # so a GPU step queues no extra kernels for them; the objectives come from the evaluation batch
    losses, hits, sizes = [], [], []
    # disable=None: no bar where stderr is not a terminal (a log would fill with \r-joined bars);
    # the line logged after each epoch says the same once
    bar = tqdm(total=n, unit="sample", unit_scale=True, leave=False, disable=None if progress else True,
               desc=f"epoch {epoch}/{cfg['epochs']}")
    backend.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        # online layers take their SGD step in their next forward pass (B = 1: one pass over W per
        # sample); leaving the block takes the last ones, before evaluation and checkpoints
        with net.deferred_steps(opts):
            for b, s in enumerate(range(0, n, bs)):
                idx = perm[s:s + bs]
                xb = X[idx] if augment is None else augment(X[idx], rng)
                stats = net.train_step(xb, Y[idx], opts, rng)
                m = len(idx)
                losses.append(stats.loss)
                hits.append(stats.correct)
                sizes.append(m)
                bar.update(m)
                if not bar.disable and host_index and b % 20 == 0:  # on a GPU reading the loss would wait for it
                    bar.set_postfix(loss=f"{float(stats.loss):.4f}", refresh=False)
        backend.synchronize()
    finally:
        bar.close()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    loss_sum, correct, _ = _epoch_sums(backend, losses, hits, [], sizes)
    test_correct, _ = net.evaluate(Xt, Yt, cfg["eval_batch_size"])
    record = dict(epoch=epoch, train_loss=float(loss_sum) / n, train_accuracy=100.0 * int(correct) / n,
                  test_accuracy=100.0 * test_correct / len(Yt), seconds=seconds,
                  samples_per_s=n / max(seconds, 1e-9), cpu_seconds=cpu_seconds, lr_out=lr_out,
                  lr_local=lr_local)
    if net.learning == "local":     # L of each hidden layer on the fixed evaluation batch (objectives.py)
        objs = layer_objectives(net, Xo, Yo)
        record["local_objective"] = objs
        record.update({f"local_objective_{k + 1}": o for k, o in enumerate(objs)})
    # the checkpoint's arrays come to the host anyway: checking them for NaN there costs no extra read-back
    params = {k: backend.to_numpy(v) for k, v in net.state().items()}
    params.update(_online_state(net))
    states = {}
    for name, opt in opts.items():
        st = opt.state()
        states[name] = dict(st, buffers=[backend.to_numpy(a) for a in st["buffers"]])
    return record, params, states


def _epoch_line(cfg, record):
    """The line logged after each epoch."""
    objs = record.get("local_objective")
    return (f"epoch {record['epoch']:3d}/{cfg['epochs']}  loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:.2f}%  {'val' if cfg['validation'] else 'test'} "
            f"{record['test_accuracy']:.2f}%  {record['seconds']:.1f}s  {record['samples_per_s']:.0f} samples/s"
            + (f"  L = {', '.join(f'{o:.3g}' for o in objs)}" if objs else ""))


def _non_finite(record, params, states):
    """Names of what is not finite after an epoch: the loss, local objectives, weights, optimiser buffers."""
    bad = [k for k in ("train_loss",) if not np.isfinite(record[k])]
    bad += [f"local objective {k + 1}" for k, o in enumerate(record.get("local_objective") or [])
            if not np.isfinite(o)]
    bad += [f"weights {k}" for k, v in params.items() if not np.all(np.isfinite(v))]
    bad += [f"{name} optimiser buffer" for name, st in states.items()
            if not all(np.all(np.isfinite(b)) for b in st["buffers"])]
    return bad


def _diverged_message(cfg, rd, epoch, bad, learning):
    """The error of a run that diverged: where, what, what was kept, what to try."""
    kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept in {rd.path}" if epoch > 1 else
            f"no checkpoint was written (no epoch of {rd.path} stayed finite)")
    rates = [f"--lr-out (now {cfg['lr_out']:g})"]
    if learning == "local" and cfg["lr_local"] is not None:
        rates.append(f"--lr-local (now {cfg['lr_local']:g})")
    what = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (f"training diverged in epoch {epoch}: NaN or Inf in {what}; {kept}; "
            f"start a new run with a lower learning rate, e.g. {' or '.join(rates)} divided by 10")


def _augmenter(cfg, backend):
    """``augment(x, rng)``: App. D.3 crop and flip of a training batch (images or flattened images)."""
    from threefactor.data.augment import pad_fill, random_crop_flip
    from threefactor.data.registry import dataset_info
    shape, fill, xp = dataset_info(cfg["dataset"]).image_shape, pad_fill(cfg["dataset"]), backend.xp

    def augment(x, rng):
        return random_crop_flip(x.reshape((x.shape[0],) + shape), rng, fill=fill, xp=xp).reshape(x.shape)
    return augment

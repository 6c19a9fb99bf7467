"""Training the paper's MLP (Sec. 4.2, Table 1) or conv nets (Sec. 4.3) with explicit rules.

Python use (settings live in :mod:`threefactor.training.config`)::

    from threefactor.training.train import resolve_config, train
    config = resolve_config(dataset="fmnist", rule="gaussian", grouping="grp+div", epochs=3)
    run = train(config, out="runs/demo")          # -> RunDir; run.read_metrics()
    conv = resolve_config(preset="cifar10-vgg-gaussian-grpdiv", epochs=2)   # Table 6, App. D.6

The command line (:mod:`threefactor.cli.train`) maps onto :func:`resolve_config` (see
``threefactor train --help``).
Everything random (initial weights, shuffling, dropout) comes from one
``numpy.random.Generator`` seeded with ``seed``; its state is checkpointed
every epoch, so ``--resume`` finishes with the same weights, bit for bit, as
an uninterrupted run on the same backend.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from threefactor.training import presets
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.data.formats import DataError
from threefactor.nn.convnet import ARCHS
from threefactor.training.build import build_convnet
from threefactor.training.loop import _ONLINE, TrainingDiverged, TrainingInterrupted, _augmenter, _epoch_sums, _load_online_state, run_epochs
from threefactor.nn.mlp import MLP
from threefactor.training.presets import TABLE6
from threefactor.training.runs import RunDir, claim_new_run_dir, claim_run_dir, release_run_dir
from threefactor.training.config import DEFAULTS, MODES, ONLINE_LR_LOCAL, _RESUMABLE, _validate, canonical_options, conv_eval_batch_size, default_backend, make_rule, resolve_config, run_name, step_beta, upgrade_config, validate_saved
from threefactor.training.naming import start_line


def build_network(cfg, n_in, n_classes, backend, rng):
    """The network of a resolved config (draws the initial weights from ``rng``).

    ``n_in`` is the input width of the MLP, or the image shape (C, H, W) for a conv arch
    (:func:`threefactor.training.build.build_convnet`).
    """
    if cfg.get("arch", "mlp") != "mlp":
        return build_convnet(cfg, tuple(n_in), n_classes, backend, rng)
    learning = presets.learning_of(cfg["rule"])
    net = MLP(n_in, cfg["hidden"], n_classes, make_rule(cfg), divisive=cfg["grouping"] == "grp+div",
              learning=learning, dropout=cfg["dropout"], backend=backend,
              dtype=np.dtype(cfg["dtype"]), rng=rng, batchnorm=bool(cfg.get("batchnorm", False)))
    if cfg.get("mode") == "online":
        from threefactor.nn.online_layer import make_online
        make_online(net, streams=cfg["streams"], beta=step_beta(cfg), shared_b3=cfg["shared_b3"],
                    delays=cfg.get("delays") or 1, refresh=bool(cfg.get("refresh_previous")))
    return net


def load_data(cfg, progress=True, log=None):
    """(x_train, y_train, x_test, y_test, n_classes) as numpy arrays of the config's dtype.

    x is (N, features) for the MLP and (N, C, H, W) for conv archs.  ValueError if
    ``subset`` asks for more samples than the training set has.  ``log`` (if given) gets one
    line saying which data were used (``--data-root`` is searched first, then the usual places:
    :func:`threefactor.data.load_dataset`; Fashion-MNIST found nowhere: the bundled sample).
    Records in ``cfg`` which data it used: ``cfg["data"]`` is ``"full"`` or ``"bundled-sample"``,
    ``cfg["data_source"]`` the folder read; a config that already says (a resumed run) gets the
    same data again.
    """
    import warnings
    from threefactor.data.datasets import BundledSampleWarning, load_dataset
    from threefactor.data.sample import BUNDLED, SAMPLE_NOTE
    flatten = cfg.get("arch", "mlp") == "mlp"
    bundled = {BUNDLED: "only", "full": "never"}.get(cfg.get("data"),
                                                     "never" if cfg["data_root"] is not None else "fallback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BundledSampleWarning)      # said below, in the run's log
        ds = load_dataset(cfg["dataset"], root=cfg["data_root"], flatten=flatten, validation=cfg["validation"],
                          seed=0, progress=progress, bundled=bundled)
    cfg["data"], cfg["data_source"] = (BUNDLED if ds.bundled else "full"), ds.source
    if log is not None:
        if ds.bundled:
            split = f" (--validation: {len(ds.y_train)} training, {len(ds.y_test)} validation)"
            log(f"data: {SAMPLE_NOTE}" + (split if cfg["validation"] else ""))
        else:
            where = f" from {ds.source}" if ds.source and str(ds.source) != str(cfg["dataset"]) else ""
            log(f"data: {cfg['dataset']}{where} ({len(ds.y_train)} training, {len(ds.y_test)} "
                f"{'validation' if cfg['validation'] else 'test'} samples)")
    x_tr, y_tr = ds.x_train, ds.y_train
    if cfg["subset"] is not None and cfg["subset"] > len(y_tr):
        part = "training part (90%, --validation)" if cfg["validation"] else "training set"
        if ds.bundled:
            part += " (the bundled sample)"
        raise ValueError(f"subset={cfg['subset']} (--subset) is more than the {len(y_tr)} samples of the "
                         f"{cfg['dataset']} {part}; give at most {len(y_tr)}, or leave --subset out")
    if cfg["subset"] is not None and cfg["subset"] < len(y_tr):
        keep = np.sort(np.random.default_rng(0).permutation(len(y_tr))[:cfg["subset"]])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    dt = np.dtype(cfg["dtype"])
    return (np.ascontiguousarray(x_tr, dtype=dt), y_tr.astype(np.int64),
            np.ascontiguousarray(ds.x_test, dtype=dt), ds.y_test.astype(np.int64), ds.n_classes)


def default_out(cfg):
    """runs/<name>-s<seed>-<time>: the preset for the MLP; dataset, arch, width and column for conv nets.

    Only the base name: :func:`train` claims it with ``os.mkdir`` and adds ``-2``, ``-3``, ...
    where a run started the same second took it (:func:`threefactor.training.runs.claim_new_run_dir`).
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = run_name(cfg)
    if cfg.get("arch", "mlp") != "mlp":
        from threefactor.data.registry import dataset_slug
        arch = cfg["arch"] if cfg["arch"] in ARCHS else "conv"
        width = "" if cfg["width"] == 1 else f"{cfg['width']}x"
        column = run_name(dict(cfg, preset=None)).split("-", 1)[1]
        name = f"{dataset_slug(cfg['dataset'])}-{arch}{width}-{'bn-' if cfg.get('batchnorm') else ''}{column}"
    return Path("runs") / f"{name}-s{cfg['seed']}-{stamp}"


def _read_resume_state(rd):
    """``rd``'s checkpoint (params, optimiser states, meta), refused if it holds NaN or Inf."""
    params, states, meta = rd.load_checkpoint()
    bad = [k for k, v in params.items() if not np.all(np.isfinite(v))]
    bad += [f"{layer} optimiser buffer" for layer, st in states.items()
            if not all(np.all(np.isfinite(b)) for b in st["buffers"])]
    if bad:
        raise ValueError(f"{rd.checkpoint_path}: holds non-finite values (NaN or Inf) in {', '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''} (a diverged run): it cannot be resumed; start a new "
                         f"run with a lower learning rate")
    return params, states, meta


def _load_resume_state(rd, checkpoint, net, opts, rng):
    """Load a checkpoint of ``rd`` (:func:`_read_resume_state`) into the network, optimisers and RNG."""
    params, states, meta = checkpoint
    try:
        _load_online_state(net, params)
        net.load_parameters({k: v for k, v in params.items() if not k.startswith(_ONLINE)})
        if set(states) != set(opts):
            raise ValueError(f"checkpoint optimisers {sorted(states)} != {sorted(opts)}")
        for name, opt in opts.items():
            opt.load_state(states[name])
        rng.bit_generator.state = meta["rng_state"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{rd.checkpoint_path}: does not fit this run's config.json ({exc})") from None


def _check_resume_epochs(cfg, rd, start, log):
    """Whether there is anything left to train after the checkpoint's epoch ``start``."""
    if cfg["epochs"] < start:
        raise ValueError(f"epochs={cfg['epochs']} (--epochs) is fewer than the {start} epochs {rd.path} has "
                         f"already done; give --epochs {start + 1} or more to train further")
    if cfg["epochs"] == start:
        log(f"{rd.path} has already finished its {start} epochs: nothing to train "
            f"(give --epochs {start + 1} or more to continue it)")
        return False
    return True


def train(cfg, out=None, *, resume=False, progress=True, log=print, data=None):
    """Train (or, with ``resume=True``, continue) a run; returns its :class:`RunDir`.

    ``cfg`` is a dict from :func:`resolve_config`; ``out`` the run directory (default
    :func:`default_out`, made unique); ``data`` optionally the tuple of :func:`load_data`
    (to share it between runs).  A new run claims its directory race-free and refuses one
    that already holds a run.  Raises :class:`TrainingDiverged` (a ValueError) when the loss
    or weights stop being finite (the last finite checkpoint is kept) and
    :class:`TrainingInterrupted` (a KeyboardInterrupt) on Ctrl-C.
    """
    rd, created, start = None, False, 0
    backend = get_backend(cfg["backend"])
    rng = np.random.default_rng(cfg["seed"])
    if resume:
        rd = RunDir(out)
        rd.read_config()
        checkpoint = _read_resume_state(rd)
        start = int(checkpoint[2]["epoch"])
        if not _check_resume_epochs(cfg, rd, start, log):
            return rd
    try:
        x_tr, y_tr, x_te, y_te, n_classes = data if data is not None else load_data(cfg, progress, log)
        if cfg.get("mode") == "online" and cfg["streams"] > len(y_tr):
            raise ValueError(f"streams={cfg['streams']} (--streams) is more than the {len(y_tr)} training samples"
                             f"{' (--subset)' if cfg['subset'] is not None else ''}: each online step takes one "
                             f"sample per stream, so no step would be full and the hidden layers would never "
                             f"learn; give --streams {len(y_tr)} or fewer")
        is_conv = cfg.get("arch", "mlp") != "mlp"
        net = build_network(cfg, x_tr.shape[1:] if is_conv else x_tr.shape[1], n_classes, backend, rng)
        opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                                   weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"],
                                   optimizer=cfg["optimizer"])
        if resume:
            _load_resume_state(rd, checkpoint, net, opts, rng)
            rd.keep_metrics_upto(start)
            rd.write_config(cfg)
            log(f"resuming {rd.path} after epoch {start}")
        else:
            if out is None:
                rd, created = claim_new_run_dir(default_out(cfg), cfg)
            else:
                rd, created = claim_run_dir(out, cfg)
            log(start_line(cfg, rd, is_conv))
            if cfg["preset_note"] and cfg["preset_note"] not in ("Table 3", "Table 6"):
                log(f"note: {cfg['preset_note']}")
    except KeyboardInterrupt:
        _release(rd, created, resume)
        raise TrainingInterrupted(None, start, rd.path if resume else None) from None
    except BaseException:
        _release(rd, created, resume)
        raise
    if backend.xp is np:
        from threefactor.bench.machine import busy_machine_note, gpu_note
        for note in (busy_machine_note(), gpu_note()):
            if note:
                log(note)
    try:
        from threefactor.backends.compile_note import compile_note
        with compile_note(log):             # one line if the Numba kernels are compiled (a first run)
            run_epochs(cfg, rd, net, opts, rng, backend, (x_tr, y_tr, x_te, y_te), start,
                       progress=progress, log=log)
    except TrainingInterrupted as exc:
        if not exc.saved and _release(rd, created, resume):
            exc.path = None
        raise
    except BaseException:
        _release(rd, created, resume)
        raise
    log(_wrote_line(rd))
    return rd


def _wrote_line(rd):
    """The last line of a finished run: where it is and what it holds."""
    names = [p.name for p in (rd.config_path, rd.metrics_path, rd.path / "metrics.csv", rd.checkpoint_path,
                              rd.path / "curves.png") if p.is_file()]
    return f"wrote {rd.path}: {', '.join(names)}"


def _release(rd, created, resume):
    """A new run that failed before recording an epoch gives its directory back; True if it did."""
    if rd is None or resume:
        return False
    return release_run_dir(rd, created)

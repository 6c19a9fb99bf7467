"""``threefactor train``: train the paper's MLP (Sec. 4.2, Table 1) or conv nets (Sec. 4.3) with explicit rules.

Python use (settings live in :mod:`threefactor.training.config`)::

    from threefactor.training.train import resolve_config, train
    config = resolve_config(dataset="fmnist", rule="gaussian", grouping="grp+div", epochs=3)
    run = train(config, out="runs/demo")          # -> RunDir; run.read_metrics()
    conv = resolve_config(preset="cifar10-vgg-gaussian-grpdiv", epochs=2)   # Table 6, App. D.6

The command line maps onto :func:`resolve_config` (see ``threefactor train --help``).
Everything random (initial weights, shuffling, dropout) comes from one
``numpy.random.Generator`` seeded with ``seed``; its state is checkpointed
every epoch, so ``--resume`` finishes with the same weights, bit for bit, as
an uninterrupted run on the same backend.
"""
from __future__ import annotations

import argparse
import datetime
import sys
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
                    delays=cfg.get("delays") or 1)
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


# -- command line ------------------------------------------------------------

DESCRIPTION = """\
Train the paper's fully connected network (3 hidden layers of 1024 LReLU units;
Pogodin & Latham 2020, Sec. 4.2, Table 1) or its convolutional networks (--arch;
Sec. 4.3, App. D.1, D.6: 3x3 conv -> SELU -> 2x2 max pool -> local objective ->
divisive norm -> alpha dropout per layer) with explicit learning rules.

Rules (--rule), one per Table 1 column:
  gaussian    each hidden layer minimises its own L = pHSIC(Z,Z) - gamma pHSIC(Y,Z)
              (Eq. 9) with a Gaussian kernel (Eq. 26; on grouped variances, Eq. 17-19);
              dW = third factor x post x pre (Eq. 10-12, 22), no error is sent back
  cosine      the same with the cosine-similarity kernel (Eq. 25; alias cossim)
  linear, or any kernel (--kernel NAME or FILE.py:Class): the same with that kernel
              (no preset: give --lr-local, --lr-out and, grouped, --groups)
  backprop    cross-entropy backpropagated through the net (hand-written backward pass)
  last-layer  hidden weights frozen at their random values; only the output learns
Names are case-insensitive; old spellings (cossim, gauss, grpdiv, lastlayer) are aliases.
Grouping (--grouping): plain; grp (c groups, p = 0.5, next layer sees z);
  grp+div (c groups, p = 0.2, next layer sees r = zhat/u^p: divisive normalisation, Eq. 21).
Only the output layer (linear + bias, softmax cross-entropy) ever sees the labels'
error; each hidden layer has its own SGD and updates during the forward pass.
Learning rates and groups come from App. D Table 3 (--preset; see
threefactor.presets); --lr-local, --lr-out, --groups override them.
Conv nets take theirs from Table 6 (App. D.6; SGD momentum 0.95, batch 128,
alpha dropout 0.05, SELU, weight decay 1e-7 local / 1e-6 output, delta 1;
milestones 300 350 450 475, backprop 100 200 250 275; 500 epochs with an
explicit --preset). The AdamW + batchnorm rows (cifar10-vgg[2x]-bn-*; LReLU,
plain dropout, batchnorm before f, every rule on milestones 300 350 450 475)
are there for comparison, not biologically plausible. Table 6 presets:
  {table6}
CIFAR-10 training batches are augmented (App. D.3): zero padding 4, random
32x32 crop, horizontal flip with p = 0.5, drawn from the run's seeded RNG.
""".format(table6="\n  ".join(", ".join(sorted(TABLE6)[i:i + 2]) for i in range(0, len(TABLE6), 2)))

EPILOG = """\
examples:
  threefactor train                      # Fashion-MNIST, Gaussian grp+div, 2 epochs
  threefactor train --dataset fmnist --rule gaussian --grouping grp+div --epochs 100 --seed 0
  threefactor train --rule gaussian --sigma 3 --gamma 1 --activation selu --lr-local 0.5 --lr-out 5e-3
  threefactor train --kernel my_kernels.py:Polynomial --lr-local 0.5 --lr-out 5e-3 --groups 32
  threefactor train --dataset path/to/data.npz --lr-local 1 --lr-out 5e-3 --groups 32
  threefactor train --rule backprop --subset 5000 --epochs 1 --hidden 256 256
  threefactor train --mode online --streams 256 --epochs 3   # two-point rule in time
  threefactor train --preset cifar10-vgg-gaussian-grpdiv --epochs 500   # Table 6 / Table 7 cell
  threefactor train --preset cifar10-vgg-bn-gaussian-grpdiv   # AdamW + batchnorm row (not plausible)
  threefactor train --arch small --dataset fmnist --rule gaussian --grouping grp+div \\
                    --groups 16 --lr-local 0.4 --epochs 2 --subset 20000   # a small conv net on the CPU
  threefactor train --arch conv16-pool-conv32-pool-fc64 --dataset mnist --rule backprop --epochs 1
  threefactor train --resume runs/fmnist-gaussian-grpdiv-s0-20240101-120000 --epochs 100
  threefactor table runs/*               # Table 1-style summary of finished runs

Each run directory holds config.json, metrics.jsonl / metrics.csv (one row per
epoch), checkpoint.npz (written atomically every epoch) and curves.png.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw description and epilog; option help wrapped at spaces only (preset names stay whole)."""

    def _split_lines(self, text, width):
        import textwrap
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


def configure_parser(parser):
    """Add ``threefactor train`` options (defaults are resolved in :func:`resolve_config`)."""
    parser.formatter_class = _Formatter
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    S = argparse.SUPPRESS
    d = DEFAULTS
    g = parser.add_argument_group("what to train")
    g.add_argument("--dataset", default=S, metavar="NAME|PATH",
                   help=f"a registered dataset ({', '.join(presets.DATASETS)}, ...) or a path: a folder of IDX "
                        f"files, a folder of CIFAR-10 batches, or an .npz with x_train, y_train, x_test, y_test "
                        f"(default {d['dataset']})")
    g.add_argument("--rule", default=S, metavar="RULE",
                   help=f"backprop, last-layer, or a local rule named by its kernel: gaussian, cosine, linear, "
                        f"any registered kernel (default {d['rule']})")
    g.add_argument("--kernel", default=S, metavar="NAME|FILE.py:Class",
                   help="the local rule's kernel: a registered name, or your own class as path/to/file.py:Class "
                        "or package.module:Class (a threefactor.Kernel; see README, Extending threefactor)")
    g.add_argument("--grouping", default=S, metavar="G",
                   help=f"one of {', '.join(presets.GROUPINGS)} (grpdiv is grp+div) (default {d['grouping']})")
    g.add_argument("--preset", default=S, metavar="NAME",
                   help="Table 3 cell, e.g. fmnist-gaussian-grpdiv, mnist-cosine-grp, kmnist-lastlayer "
                        "(default: <dataset>-<rule>[-grp|-grpdiv]), or a Table 6 conv cell (listed "
                        "above), e.g. cifar10-vgg-gaussian-grpdiv, cifar10-vgg2x-backprop")
    g.add_argument("--arch", default=S, metavar="ARCH",
                   help=f"mlp (default), a conv net: {', '.join(f'{k} ({v})' for k, v in ARCHS.items())}, "
                        "or blocks convN / pool / fcN joined by '-', e.g. conv16-pool-conv32-pool-fc64")
    g.add_argument("--width", type=int, default=S, metavar="K",
                   help="conv channel multiplier (2: the paper's 2x VGG; default 1)")
    g.add_argument("--hidden", type=int, nargs="+", default=S, metavar="N",
                   help="MLP hidden widths (default 1024 1024 1024; conv archs: write fc layers in --arch)")
    g.add_argument("--groups", type=int, default=S, metavar="C",
                   help="number of groups c per hidden layer for grp / grp+div (Eq. 17-19; must divide each "
                        "width); default from the preset: Table 3 for the MLP (e.g. 32 for "
                        "fmnist-gaussian-grpdiv), Table 6 for conv nets")
    k = parser.add_argument_group("the local rule (Eq. 9, 17-21, 24-26, 35-36; defaults App. D.4)")
    k.add_argument("--sigma", type=float, default=S, help=f"width of the Gaussian kernel (default {d['sigma']:g})")
    k.add_argument("--gamma", type=float, default=S,
                   help=f"weight of the label term, L = pHSIC(Z,Z) - gamma pHSIC(Y,Z) (default {d['gamma']:g})")
    k.add_argument("--activation", default=S, metavar="F",
                   help=f"linear, relu, lrelu or selu (default {d['activation']}; conv presets selu)")
    k.add_argument("--slope", type=float, default=S, help=f"negative slope of lrelu (default {d['slope']:g})")
    k.add_argument("--p", type=float, default=S,
                   help="exponent of the group normalisation, in [0, 1) (default: 0.5 for grp, 0.2 for grp+div)")
    k.add_argument("--delta", type=float, default=S,
                   help=f"offset of the smoothed group variance (default {d['delta']:g})")
    k.add_argument("--label-kernel", dest="label_kernel", default=S, metavar="K",
                   help=f"kernel on the labels: cosine (Eq. 35) or linear (Eq. 36) (default {d['label_kernel']})")
    h = parser.add_argument_group("optimisation (App. D.4-D.5)")
    h.add_argument("--epochs", type=int, default=S, help="epochs (default 2; the paper: 100)")
    h.add_argument("--lr-local", dest="lr_local", type=float, default=S, metavar="ETA_L",
                   help="eta_l, the local learning rate of the hidden layers (cossim and gaussian rules "
                        "only); default from the preset: Table 3 for the MLP (e.g. 1.0 for "
                        f"fmnist-gaussian-grpdiv), Table 6 for conv nets; --mode online: {ONLINE_LR_LOCAL}")
    h.add_argument("--lr-out", dest="lr_out", type=float, default=S, metavar="ETA_F",
                   help="eta_f, the learning rate of the output layer (with --rule backprop: of every "
                        "layer); default from the preset: Table 3 for the MLP (e.g. 5e-3 for "
                        "fmnist-gaussian-grpdiv), Table 6 for conv nets")
    h.add_argument("--milestones", type=int, nargs="*", default=S, metavar="EPOCH",
                   help="epochs (>= 1, increasing) after which the learning rates are multiplied by 0.25 "
                        "(default 50 75 90; conv nets: Table 6's)")
    h.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="default 256")
    h.add_argument("--dropout", type=float, default=S, help="dropout after each hidden layer (default 0.01)")
    h.add_argument("--optimizer", default=S,
                   help="sgd (the paper's, momentum 0.95) or adamw (default sgd; adamw for conv nets "
                        "with --batchnorm)")
    h.add_argument("--batchnorm", action="store_true", default=S,
                   help="batchnorm between each hidden layer's linear/conv operation and f, its "
                        "gradient written out, gamma and beta learned with W (Table 7's AdamW + "
                        "batchnorm rows; conv nets then default to AdamW and LReLU). Not "
                        "biologically plausible: the run's config says plausible: false")
    h.add_argument("--seed", type=int, default=S, help="seeds weights, shuffling and dropout (default 0)")
    o = parser.add_argument_group("biologically explicit mode (Eq. 13, App. C)")
    o.add_argument("--mode", default=S, metavar="MODE",
                   help="batch (the paper's batch rule, Eq. 10) or online: B independent streams, each "
                        "sample paired with its stream's previous one, third factor from the circuit "
                        "variables b1, b2, b3 (Eq. 59-66); Gaussian rules only (default batch). "
                        f"Online, lr_local defaults to {ONLINE_LR_LOCAL} (the batch presets' eta_l is "
                        "unstable for two-point updates)")
    o.add_argument("--streams", type=int, default=S, metavar="B",
                   help="online: streams stepped together, one sample each per step (default: batch size 256); at most "
                        "the training set's size; an epoch's short last step (when B does not divide the "
                        "training set) trains only the output layer")
    o.add_argument("--beta", type=float, default=S, help="online: rate of the running average b3 (Eq. 61; default 0.01)")
    o.add_argument("--per-stream-b3", dest="shared_b3", action="store_false", default=S,
                   help="online: each stream keeps its own b3 (default: one b3 shared by all streams)")
    o.add_argument("--rate-rule", dest="rate_rule", default=S, metavar="RULE",
                   help="online: per-sample (default: --lr-local, --lr-out and --beta mean what they mean at "
                        "256 streams, a step of B streams uses lr x B/256, so --streams changes speed, not "
                        "learning) or per-step (the rates as given at any B, as runs before it did)")
    o.add_argument("--delays", type=int, default=S, metavar="K",
                   help="online: pair each sample with its stream's K previous samples, not only the last "
                        "(K pairs per sample at any B; default 1)")
    r = parser.add_argument_group("data, hardware and output")
    r.add_argument("--data-root", dest="data_root", default=S, metavar="DIR",
                   help="where datasets live (default: $THREEFACTOR_DATA, system dirs, ~/.cache/threefactor)")
    r.add_argument("--validation", action="store_true", default=S,
                   help="hold out 10%% of the training set and report accuracy on it instead of the test set")
    r.add_argument("--subset", type=int, default=S, metavar="N",
                   help="train on N training samples, at most the training set's size (quick runs)")
    r.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S,
                   help="App. D.3 crop (zero padding 4) and horizontal flip of training batches "
                        "(default: on for cifar10, off otherwise)")
    r.add_argument("--eval-batch-size", dest="eval_batch_size", type=int, default=S, metavar="N",
                   help="test-set batch (default 2000; conv nets: what keeps im2col under 2 GiB, vgg 450)")
    r.add_argument("--backend", default=S, help="numpy, numba, cupy or a backend another package registers (entry-point group "
                        "threefactor.backends; default numba if available)")
    r.add_argument("--dtype", default=S, help="float32 (default) or float64")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="run directory, new or holding no run (default runs/<preset>-s<seed>-<time>, "
                        "with -2, -3, ... if that is taken)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (there are none anyway when stderr is not a terminal)")
    return parser


def run(args):
    """Entry point of ``threefactor train``; returns the exit status (130 after Ctrl-C)."""
    options = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    try:
        if args.resume is not None:
            if args.out is not None:
                raise ValueError("give either --out or --resume, not both")
            rd = RunDir(args.resume)
            cfg = upgrade_config(rd.read_config())
            validate_saved(cfg, rd.config_path)
            options = canonical_options(options)
            changed = sorted(k for k in options if k not in _RESUMABLE and options[k] != cfg.get(k))
            if changed:
                raise ValueError(f"cannot change {', '.join(changed)} when resuming (only --epochs)")
            cfg.update({k: v for k, v in options.items() if k in _RESUMABLE})
            _validate(cfg)
            train(cfg, rd.path, resume=True, progress=args.progress)
        else:
            cfg = resolve_config(**options)
            train(cfg, args.out, progress=args.progress)
    except (TrainingDiverged, DataError) as exc:   # not bad use: the run or its data failed (status 1, not 2)
        print(f"threefactor train: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, BackendUnavailable) as exc:
        raise SystemExit(f"threefactor train: error: {exc}")
    except TrainingInterrupted as exc:
        print(exc.message(), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    return 0

"""``threefactor train``: train the paper's MLP (Sec. 4.2, Table 1) or conv nets (Sec. 4.3) with explicit rules.

Python use (settings live in :mod:`threefactor.train_config`)::

    from threefactor.train import resolve_config, train
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
import time
from pathlib import Path

import numpy as np

from . import presets
from .backends import BackendUnavailable, get_backend
from .conv_layers import ARCHS, build_convnet
from .networks import MLP
from .optim import multistep_lr
from .presets import TABLE6
from .runs import RunDir
from .train_config import (  # noqa: F401  (re-exported: the Python API of ``threefactor.train``)
    DEFAULTS, MODES, ONLINE_LR_LOCAL, _RESUMABLE, _validate, conv_eval_batch_size, default_backend,
    make_rule, resolve_config)


def build_network(cfg, n_in, n_classes, backend, rng):
    """The network of a resolved config (draws the initial weights from ``rng``).

    ``n_in`` is the input width of the MLP, or the image shape (C, H, W) for a conv arch
    (:func:`threefactor.conv_layers.build_convnet`).
    """
    if cfg.get("arch", "mlp") != "mlp":
        return build_convnet(cfg, tuple(n_in), n_classes, backend, rng)
    learning = presets.learning_of(cfg["rule"])
    net = MLP(n_in, cfg["hidden"], n_classes, make_rule(cfg), divisive=cfg["grouping"] == "grp+div",
              learning=learning, dropout=cfg["dropout"], backend=backend,
              dtype=np.dtype(cfg["dtype"]), rng=rng, batchnorm=bool(cfg.get("batchnorm", False)))
    if cfg.get("mode") == "online":
        from .online_layer import make_online
        make_online(net, streams=cfg["streams"], beta=cfg["beta"], shared_b3=cfg["shared_b3"])
    return net


_ONLINE = "online/"   # checkpoint keys of the online streams' state (previous sample, b3)


def _online_state(net):
    return {f"{_ONLINE}{k}/{key}": v for k, layer in enumerate(net.hidden) if hasattr(layer, "online")
            for key, v in layer.online.state().items()}


def _load_online_state(net, arrays):
    for k, layer in enumerate(net.hidden):
        if hasattr(layer, "online"):
            prefix = f"{_ONLINE}{k}/"
            layer.online.load_state({key[len(prefix):]: v for key, v in arrays.items() if key.startswith(prefix)})


def load_data(cfg, progress=True):
    """(x_train, y_train, x_test, y_test, n_classes) as numpy arrays of the config's dtype.

    x is (N, features) for the MLP and (N, C, H, W) for conv archs.
    """
    from .data import load_dataset
    flatten = cfg.get("arch", "mlp") == "mlp"
    ds = load_dataset(cfg["dataset"], root=cfg["data_root"], flatten=flatten, validation=cfg["validation"],
                      seed=0, progress=progress)
    x_tr, y_tr = ds.x_train, ds.y_train
    if cfg["subset"] is not None and cfg["subset"] < len(y_tr):
        keep = np.sort(np.random.default_rng(0).permutation(len(y_tr))[:cfg["subset"]])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    dt = np.dtype(cfg["dtype"])
    return (np.ascontiguousarray(x_tr, dtype=dt), y_tr.astype(np.int64),
            np.ascontiguousarray(ds.x_test, dtype=dt), ds.y_test.astype(np.int64), ds.n_classes)


def default_out(cfg):
    """runs/<name>-s<seed>-<time>: the preset for the MLP; dataset, arch, width and column for conv nets."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = cfg["preset"]
    if cfg.get("arch", "mlp") != "mlp":
        arch = cfg["arch"] if cfg["arch"] in ARCHS else "conv"
        width = "" if cfg["width"] == 1 else f"{cfg['width']}x"
        column = presets.preset_name(cfg["dataset"], cfg["rule"], cfg["grouping"]).split("-", 1)[1]
        name = f"{cfg['dataset']}-{arch}{width}-{'bn-' if cfg.get('batchnorm') else ''}{column}"
    return Path("runs") / f"{name}-s{cfg['seed']}-{stamp}"


def train(cfg, out=None, *, resume=False, progress=True, log=print, data=None):
    """Train (or, with ``resume=True``, continue) a run; returns its :class:`RunDir`.

    ``cfg`` is a dict from :func:`resolve_config`; ``out`` the run directory;
    ``data`` optionally the tuple of :func:`load_data` (to share it between runs).
    """
    rd = RunDir(out if out is not None else default_out(cfg))
    if not resume and (rd.has_checkpoint() or rd.metrics_path.exists()):
        raise ValueError(f"out={str(rd.path)!r} already holds a run; resume it with --resume "
                         f"{rd.path} or choose another --out")
    backend = get_backend(cfg["backend"])
    x_tr, y_tr, x_te, y_te, n_classes = data if data is not None else load_data(cfg, progress)
    rng = np.random.default_rng(cfg["seed"])
    is_conv = cfg.get("arch", "mlp") != "mlp"
    net = build_network(cfg, x_tr.shape[1:] if is_conv else x_tr.shape[1], n_classes, backend, rng)
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"],
                               optimizer=cfg["optimizer"])
    start = 0
    if resume:
        params, states, meta = rd.load_checkpoint()
        _load_online_state(net, params)
        net.load_parameters({k: v for k, v in params.items() if not k.startswith(_ONLINE)})
        if set(states) != set(opts):
            raise ValueError(f"{rd.path}: checkpoint optimisers {sorted(states)} != {sorted(opts)}")
        for name, opt in opts.items():
            opt.load_state(states[name])
        rng.bit_generator.state = meta["rng_state"]
        start = int(meta["epoch"])
        rd.keep_metrics_upto(start)
        log(f"resuming {rd.path} after epoch {start}")
    rd.write_config(cfg)
    if not resume:
        log(f"{cfg['dataset']} {cfg['column']}: preset {cfg['preset']} (lr_out {cfg['lr_out']}, "
            f"lr_local {cfg['lr_local']}, groups {cfg['groups']}), "
            + (f"arch {cfg['arch']} x{cfg['width']}, " if is_conv else f"hidden {cfg['hidden']}, ")
            + ("augmented, " if cfg.get("augment") else "")
            + ("batchnorm + " + cfg["optimizer"] + " (not biologically plausible), " if cfg.get("batchnorm") else "") +
            f"{cfg['backend']} {cfg['dtype']}, seed {cfg['seed']}"
            + (f", online ({cfg['streams']} streams, beta {cfg['beta']})" if cfg.get("mode") == "online" else "")
            + f" -> {rd.path}")
        if cfg["preset_note"] and cfg["preset_note"] not in ("Table 3", "Table 6"):
            log(f"note: {cfg['preset_note']}")
    if backend.xp is np:
        from .machine import busy_machine_note, gpu_note
        for note in (busy_machine_note(), gpu_note()):
            if note:
                log(note)
    run_epochs(cfg, rd, net, opts, rng, backend, (x_tr, y_tr, x_te, y_te), start,
               progress=progress, log=log)
    return rd


def _epoch_sums(backend, losses, hits, objectives, sizes):
    """(Σ loss_b·m_b, Σ hits_b, [Σ L_k,b·m_b per layer k]) of an epoch's steps, from the per-step
    0-d arrays: one read-back per kind (:meth:`scalars`), summed on the host in float64."""
    m = np.asarray(sizes, dtype=np.float64)
    layers = len(objectives[0]) if objectives else 0
    obj = backend.scalars([o for step in objectives for o in step]).reshape(len(objectives), layers)
    return (float(backend.scalars(losses) @ m), int(backend.scalars(hits).sum()),
            [float(obj[:, k] @ m) for k in range(layers)])


def run_epochs(cfg, rd, net, opts, rng, backend, data, start=0, *, progress=True, log=print):
    """Epochs ``start+1 .. cfg["epochs"]``: train, test, checkpoint, log, plot."""
    from tqdm.auto import tqdm
    x_tr, y_tr, x_te, y_te = data
    X, Y = backend.asarray(x_tr), backend.asarray(y_tr)
    Xt, Yt = backend.asarray(x_te), backend.asarray(y_te)
    n, bs = len(y_tr), cfg["batch_size"]
    host_index = backend.xp is np
    augment = _augmenter(cfg, backend) if cfg.get("augment") else None
    last_plot = time.perf_counter()
    for epoch in range(start + 1, cfg["epochs"] + 1):
        lr_out = multistep_lr(cfg["lr_out"], epoch, cfg["milestones"], cfg["lr_factor"])
        lr_local = None if cfg["lr_local"] is None else \
            multistep_lr(cfg["lr_local"], epoch, cfg["milestones"], cfg["lr_factor"])
        for name, opt in opts.items():
            opt.lr = lr_out if name == "output" or net.learning == "backprop" else lr_local
        perm = rng.permutation(n)
        if not host_index:    # the epoch's order uploaded once: a pageable copy per step would wait for the GPU
            perm = backend.asarray(perm)
        # per-step statistics stay where they were computed (0-d arrays) and are summed once per epoch,
        # so a GPU step queues no extra kernels for them
        losses, hits, objectives, sizes = [], [], [], []
        bar = tqdm(total=n, unit="sample", unit_scale=True, leave=False, disable=not progress,
                   desc=f"epoch {epoch}/{cfg['epochs']}")
        backend.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for b, s in enumerate(range(0, n, bs)):
            idx = perm[s:s + bs]
            xb = X[idx] if augment is None else augment(X[idx], rng)
            stats = net.train_step(xb, Y[idx], opts, rng)
            m = len(idx)
            losses.append(stats.loss)
            hits.append(stats.correct)
            objectives.append(stats.objectives)
            sizes.append(m)
            bar.update(m)
            if progress and host_index and b % 20 == 0:   # on a GPU reading the loss would wait for it
                bar.set_postfix(loss=f"{float(stats.loss):.4f}", refresh=False)
        backend.synchronize()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        bar.close()
        loss_sum, correct, obj_sums = _epoch_sums(backend, losses, hits, objectives, sizes)
        test_correct, _ = net.evaluate(Xt, Yt, cfg["eval_batch_size"])
        record = dict(epoch=epoch, train_loss=float(loss_sum) / n, train_accuracy=100.0 * int(correct) / n,
                      test_accuracy=100.0 * test_correct / len(y_te), seconds=seconds,
                      samples_per_s=n / seconds, cpu_seconds=cpu_seconds, lr_out=lr_out, lr_local=lr_local)
        if net.learning == "local":
            objs = [float(o) / n for o in obj_sums]
            record["local_objective"] = objs
            record.update({f"local_objective_{k + 1}": o for k, o in enumerate(objs)})
        params = {k: backend.to_numpy(v) for k, v in net.state().items()}
        params.update(_online_state(net))
        states = {}
        for name, opt in opts.items():
            st = opt.state()
            states[name] = dict(st, buffers=[backend.to_numpy(a) for a in st["buffers"]])
        # metrics first: a kill between the two leaves a record newer than the checkpoint,
        # which --resume drops and recomputes (the other order would lose the record)
        rd.append_metrics(record)
        rd.save_checkpoint(params, states, dict(epoch=epoch, rng_state=rng.bit_generator.state, config=cfg))
        if epoch == cfg["epochs"] or time.perf_counter() - last_plot > 60:   # plotting costs ~0.5 s
            rd.plot(title=f"{cfg['dataset']} {cfg['column']} (seed {cfg['seed']})")
            last_plot = time.perf_counter()
        objs = record.get("local_objective")
        log(f"epoch {epoch:3d}/{cfg['epochs']}  loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:.2f}%  {'val' if cfg['validation'] else 'test'} "
            f"{record['test_accuracy']:.2f}%  {seconds:.1f}s  {record['samples_per_s']:.0f} samples/s"
            + (f"  L = {', '.join(f'{o:.3g}' for o in objs)}" if objs else ""))


def _augmenter(cfg, backend):
    """``augment(x, rng)``: App. D.3 crop and flip of a training batch (images or flattened images)."""
    from .augment import pad_fill, random_crop_flip
    from .data import IMAGE_SHAPES
    shape, fill, xp = IMAGE_SHAPES[cfg["dataset"]], pad_fill(cfg["dataset"]), backend.xp

    def augment(x, rng):
        return random_crop_flip(x.reshape((x.shape[0],) + shape), rng, fill=fill, xp=xp).reshape(x.shape)
    return augment


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
  cossim      the same with the cosine-similarity kernel (Eq. 25)
  backprop    cross-entropy backpropagated through the net (hand-written backward pass)
  last-layer  hidden weights frozen at their random values; only the output learns
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
  threefactor train --rule backprop --subset 5000 --epochs 1 --hidden 256 256
  threefactor train --mode online --streams 256 --epochs 3   # two-point rule in time
  threefactor train --preset cifar10-vgg-gaussian-grpdiv --epochs 500   # Table 6 / Table 7 cell
  threefactor train --preset cifar10-vgg-bn-gaussian-grpdiv   # AdamW + batchnorm row (not plausible)
  threefactor train --arch small --dataset fmnist --rule gaussian --grouping grp+div --groups 16 \
                    --lr-local 0.4 --epochs 2 --subset 20000            # a small conv net on the CPU
  threefactor train --arch conv16-pool-conv32-pool-fc64 --dataset mnist --rule backprop --epochs 1
  threefactor train --resume runs/fmnist-gaussian-grpdiv-s0-20240101-120000 --epochs 100
  threefactor table runs/*               # Table 1-style summary of finished runs

Each run directory holds config.json, metrics.jsonl / metrics.csv (one row per
epoch), checkpoint.npz (written atomically every epoch) and curves.png.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def configure_parser(parser):
    """Add ``threefactor train`` options (defaults are resolved in :func:`resolve_config`)."""
    parser.formatter_class = _Formatter
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    S = argparse.SUPPRESS
    d = DEFAULTS
    g = parser.add_argument_group("what to train")
    g.add_argument("--dataset", default=S, metavar="NAME",
                   help=f"one of {', '.join(presets.DATASETS)} (default {d['dataset']})")
    g.add_argument("--rule", default=S, metavar="RULE",
                   help=f"one of {', '.join(presets.RULES)} (default {d['rule']})")
    g.add_argument("--grouping", default=S, metavar="G",
                   help=f"one of {', '.join(presets.GROUPINGS)} (default {d['grouping']})")
    g.add_argument("--preset", default=S, metavar="NAME",
                   help="Table 3 cell, e.g. fmnist-gaussian-grpdiv, mnist-cossim-grp, kmnist-lastlayer "
                        "(default: <dataset>-<rule>[-grp|-grpdiv]), or a Table 6 conv cell (listed "
                        "above), e.g. cifar10-vgg-gaussian-grpdiv, cifar10-vgg2x-backprop")
    g.add_argument("--arch", default=S, metavar="ARCH",
                   help=f"mlp (default), a conv net: {', '.join(f'{k} ({v})' for k, v in ARCHS.items())}, "
                        "or blocks convN / pool / fcN joined by '-', e.g. conv16-pool-conv32-pool-fc64")
    g.add_argument("--width", type=int, default=S, metavar="K",
                   help="conv channel multiplier (2: the paper's 2x VGG; default 1)")
    g.add_argument("--hidden", type=int, nargs="+", default=S, metavar="N",
                   help="MLP hidden widths (default 1024 1024 1024; conv archs: write fc layers in --arch)")
    g.add_argument("--groups", type=int, default=S, metavar="C", help="number of groups c per layer (preset)")
    h = parser.add_argument_group("optimisation (App. D.4-D.5)")
    h.add_argument("--epochs", type=int, default=S, help="epochs (default 2; the paper: 100)")
    h.add_argument("--lr-local", dest="lr_local", type=float, default=S, help="eta_l of the hidden layers (preset)")
    h.add_argument("--lr-out", dest="lr_out", type=float, default=S, help="eta_f of the output / backprop (preset)")
    h.add_argument("--milestones", type=int, nargs="*", default=S, metavar="EPOCH",
                   help="epochs after which the learning rates are multiplied by 0.25 (default 50 75 90)")
    h.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="default 256")
    h.add_argument("--dropout", type=float, default=S, help="dropout after each hidden layer (default 0.01)")
    h.add_argument("--optimizer", default=S, help="sgd (the paper's, momentum 0.95) or adamw")
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
                        "variables b1, b2, b3 (Eq. 59-66); Gaussian rules only (default batch)")
    o.add_argument("--streams", type=int, default=S, metavar="B",
                   help="online: streams stepped together, one sample each per step (default: batch size 256)")
    o.add_argument("--beta", type=float, default=S, help="online: rate of the running average b3 (Eq. 61; default 0.01)")
    o.add_argument("--per-stream-b3", dest="shared_b3", action="store_false", default=S,
                   help=f"online: each stream keeps its own b3 (default: one b3 shared by all streams); "
                        f"online lr_local defaults to {ONLINE_LR_LOCAL}")
    r = parser.add_argument_group("data, hardware and output")
    r.add_argument("--data-root", dest="data_root", default=S, metavar="DIR",
                   help="where datasets live (default: $THREEFACTOR_DATA, system dirs, ~/.cache/threefactor)")
    r.add_argument("--validation", action="store_true", default=S,
                   help="hold out 10%% of the training set and report accuracy on it instead of the test set")
    r.add_argument("--subset", type=int, default=S, metavar="N", help="train on N training samples (quick runs)")
    r.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S,
                   help="App. D.3 crop (zero padding 4) and horizontal flip of training batches "
                        "(default: on for cifar10, off otherwise)")
    r.add_argument("--eval-batch-size", dest="eval_batch_size", type=int, default=S, metavar="N",
                   help="test-set batch (default 2000; conv nets: what keeps im2col under 2 GiB, vgg 450)")
    r.add_argument("--backend", default=S, help="numpy, numba or cupy (default numba if available)")
    r.add_argument("--dtype", default=S, help="float32 (default) or float64")
    r.add_argument("--out", default=None, metavar="DIR", help="run directory (default runs/<preset>-s<seed>-<time>)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def run(args):
    """Entry point of ``threefactor train``; returns the exit status."""
    options = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    try:
        if args.resume is not None:
            if args.out is not None:
                raise ValueError("give either --out or --resume, not both")
            rd = RunDir(args.resume)
            cfg = rd.read_config()
            changed = sorted(k for k in options if k not in _RESUMABLE and options[k] != cfg.get(k))
            if changed:
                raise ValueError(f"cannot change {', '.join(changed)} when resuming (only --epochs)")
            cfg.update({k: v for k, v in options.items() if k in _RESUMABLE})
            _validate(cfg)
            train(cfg, rd.path, resume=True, progress=args.progress)
        else:
            cfg = resolve_config(**options)
            train(cfg, args.out, progress=args.progress)
    except (ValueError, TypeError, BackendUnavailable) as exc:
        raise SystemExit(f"threefactor train: error: {exc}")
    return 0

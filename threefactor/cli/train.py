"""``threefactor train``: the command line of :func:`threefactor.training.train.train`.

Each option maps onto :func:`~threefactor.training.config.resolve_config`; ``--resume`` reads a run
directory's config.json and may change only ``--epochs``.  Exit status: 0 done, 1 the run diverged or
its data are missing, 2 bad use, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from threefactor.backends import BackendUnavailable
from threefactor.data.formats import DataError
from threefactor.nn.convnet import ARCHS
from threefactor.training import presets
from threefactor.training.config import DEFAULTS, ONLINE_DELAYS, ONLINE_LR_LOCAL, _RESUMABLE, _validate, canonical_options, resolve_config, upgrade_config, validate_saved
from threefactor.training.loop import TrainingDiverged, TrainingInterrupted
from threefactor.training.presets import TABLE6
from threefactor.training.runs import RunDir
from threefactor.training.train import train


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
threefactor.training.presets); --lr-local, --lr-out, --groups override them.
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
                   help="eta_l, the local learning rate of the hidden layers (local rules only: "
                        "gaussian, cosine or any --kernel); default from the preset: Table 3 for the MLP (e.g. 1.0 for "
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
                        f"sample paired with its stream's {ONLINE_DELAYS} previous ones, third factor from the circuit "
                        "variables b1, b2, b3 (Eq. 59-66); Gaussian rules only (default batch). "
                        f"Online, lr_local defaults to {ONLINE_LR_LOCAL} (the batch presets' eta_l "
                        "collapses with the stored previous activity, stalls with the refreshed one)")
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
    o.add_argument("--refresh-previous", dest="refresh_previous", action="store_true", default=S,
                   help="online (the default): the previous samples' activity is recomputed with the current "
                        "weights, so a step of B streams pairs samples as B = 1 would (one sample's update "
                        "apart, not B samples'); costs one more forward pass per step (with it the batch "
                        "rate 1.0 trains, where the stored activity collapses)")
    o.add_argument("--stored-previous", dest="refresh_previous", action="store_false", default=S,
                   help="online: pair with the activity stored at the previous step (computed with the weights "
                        "of then: the circuit as App. C draws it; runs before --refresh-previous did this)")
    o.add_argument("--delays", type=int, default=S, metavar="K",
                   help="online: pair each sample with its stream's K previous samples (K pairs per sample at "
                        f"any B; default {ONLINE_DELAYS}; 1 is the circuit of App. C, one pair per sample: "
                        "give --lr-local 0.3 with it, its tuned rate)")
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

"""Configuration of a training run: defaults, presets and validation (``threefactor train``).

:func:`resolve_config` fills in every hyperparameter of a run from the options given,
the preset (App. D Table 3 for the MLP, Table 6 for the conv nets) and the defaults
(App. D.4-D.6), and validates them, naming the bad option.  The result is a JSON-able
dict, saved as the run's ``config.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from threefactor.rule import conv
from threefactor.training import presets
from threefactor.backends import BackendUnavailable, backend_names, get_backend
from threefactor.nn.convnet import ARCHS, parse_arch
from threefactor.nn.optim import OPTIMIZERS
from threefactor.training.presets import TABLE6, TABLE6_BN, TABLE6_SHARED, table6_preset
from threefactor.data.registry import canonical_dataset, dataset_info, dataset_slug
from threefactor.rule.rules import choice_error
from threefactor.training.naming import _need_rates, _rule_slug, canonical_options, run_name, upgrade_config  # noqa: F401
from threefactor.training.rates import RATE_RULES, RATE_STREAMS, rate_scale, step_beta  # noqa: F401

#: Defaults of every option (App. D.4-D.5 unless said otherwise).
DEFAULTS = dict(
    dataset="fmnist", rule="gaussian", grouping="grp+div", preset=None,
    kernel=None,                    # a local rule's kernel: its rule's name, or FILE.py:Class (rule "local")
    p=None,                         # None: the grouping's (grp 0.5, grp+div 0.2; App. D.4)
    epochs=2,                       # a short demo; the paper trains for 100
    seed=0, lr_local=None, lr_out=None, groups=None, data_root=None, validation=False,
    subset=None, backend=None, dtype="float32", eval_batch_size=2000,
    mode="batch", streams=None, beta=0.01, shared_b3=True, rate_rule=None, delays=None, refresh_previous=None,
    arch="mlp", width=1, augment=None,     # augment None: on for cifar10 (App. D.3), off otherwise
    batchnorm=False,
    **{k: v for k, v in presets.SHARED.items() if k != "epochs"},
)
#: Conv nets' defaults where they differ from the MLP's (Table 6 shared settings, App. D.4, D.6);
#: the epochs (500) only come with an explicit --preset.
CONV_SHARED = {k: v for k, v in TABLE6_SHARED.items()
               if k not in ("dataset", "arch", "epochs", "milestones_backprop")}
#: Memory budget of the largest im2col matrix of one evaluation batch (sets eval_batch_size
#: of conv nets: vgg 450, vgg2x 200, small on 28x28 2000 in float32).
EVAL_IM2COL_BYTES = 2 * 2 ** 30
DTYPES = ("float32", "float64")
MODES = ("batch", "online")
#: Local learning rate and pairs per sample of --mode online when none are given.  Over the paper's
#: 100-epoch schedule one pair per sample at 0.3 (shared b3) ended best of 0.1 / 0.2 / 0.3, 1.5 points below
#: the batch rule on Fashion-MNIST (benchmarks/RESULTS.md, "Online rule"); two pairs per sample (each
#: sample with its stream's two previous ones, refreshed) halve the pairs' noise and take 0.5: 5 epochs
#: 77.8 % against 76.9 % (five seeds each; "Two pairs per sample").  The batch presets' eta_l (1.0)
#: collapses with the stored previous activity; refreshed it trains, but stalls at 73-80 % through
#: epoch 20 ("Closing the short-run gap"), so it is not the default either way.
ONLINE_LR_LOCAL = 0.5
ONLINE_DELAYS = 2
#: Whether --mode online recomputes the previous samples' activity with the current weights
#: (:class:`threefactor.nn.online_layer.OnlineLayer`, ``refresh``) when not said.
ONLINE_REFRESH_PREVIOUS = True
_RESUMABLE = {"epochs"}     # options that may change on --resume


def default_backend():
    """``numba`` where it runs, else ``numpy``."""
    try:
        get_backend("numba")
        return "numba"
    except (BackendUnavailable, ImportError):
        return "numpy"


def resolve_config(**options):
    """Fill in every hyperparameter of a run from ``options``, the preset and the defaults.

    The preset is ``options["preset"]`` or, for the MLP, ``<dataset>-<rule>[-grp|-grpdiv]``
    (Table 3); for conv archs ``cifar10-vgg[2x]-<rule>[-grp|-grpdiv]`` (Table 6, by width).
    ``lr_out``, ``lr_local`` and ``groups`` not given come from it (conv presets also set
    the Table 6 optimisation: SELU, alpha dropout 0.05, batch 128, milestones; an explicit
    conv ``preset`` also sets 500 epochs).  A configuration without a preset (another
    kernel, ``kernel="FILE.py:Class"``, a dataset by name or path outside Table 3) needs
    its rates given; the error names the missing ones.  Names are canonicalised
    (:func:`canonical_options`).  Returns a JSON-able dict (saved as ``config.json``).
    Raises ValueError/TypeError naming the bad option.
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    given = canonical_options({k: v for k, v in options.items() if v is not None})
    name = given.get("preset")
    cell = table6_preset(name) if name in TABLE6 else None
    preset = presets.get_preset(name) if name is not None and cell is None else None
    cfg = dict(DEFAULTS)
    if cell is not None:
        cfg.update({k: v for k, v in cell.items() if k in DEFAULTS})
    elif preset is not None:
        cfg.update(dataset=preset.dataset, rule=preset.rule, grouping=preset.grouping)
    if name is not None:
        for key in ("dataset", "rule", "grouping", "arch", "width", "batchnorm"):
            if key in given and given[key] != cfg[key]:
                raise ValueError(f"{key}={given[key]!r} contradicts preset {name!r} "
                                 f"({key}={cfg[key]!r}); drop one of them")
    cfg.update(given)
    local = presets.learning_of(cfg["rule"]) == "local"
    cfg["kernel"] = (cfg["kernel"] or cfg["rule"]) if local else None
    presets.check_column(cfg["rule"], cfg["grouping"])
    is_conv = _check_arch(cfg, given)
    if is_conv:
        fields, cfg["preset"], cfg["preset_note"] = _conv_preset(cfg, given, cell)
    else:
        if preset is None:
            preset = presets.PRESETS.get(presets.preset_name(cfg["dataset"], cfg["rule"], cfg["grouping"]))
        if preset is None:
            dataset_info(cfg["dataset"])      # a missing or unreadable dataset path is named before the rates
            _need_rates(cfg, given, "no Table 3 preset for")
            cfg["preset"], cfg["preset_note"], fields = None, "no preset: rates given", {}
        else:
            cfg["preset"], cfg["preset_note"] = preset.name, preset.note
            fields = dict(lr_out=preset.lr_out, lr_local=preset.lr_local, groups=preset.groups)
    if cfg["mode"] not in MODES:
        raise choice_error("mode", cfg["mode"], MODES)
    if cfg["mode"] == "online":
        if is_conv:
            raise ValueError(f"mode='online' needs arch='mlp' (two-point streams drive dense layers), "
                             f"got arch={cfg['arch']!r}")
        if cfg["batchnorm"]:
            raise ValueError("mode='online' cannot use batchnorm: a stream sees one sample at a time, "
                             "there is no batch to normalise over")
        if cfg["rule"] != "gaussian":
            raise ValueError(f"mode='online' needs rule='gaussian' (the two-point rule of Eq. 13 is "
                             f"the Gaussian kernel's), got rule={cfg['rule']!r}")
        if "streams" in given and "batch_size" in given and given["streams"] != given["batch_size"]:
            raise ValueError("streams and batch_size disagree: in online mode B streams step together, "
                             "one sample each, so give only --streams")
        streams = given.get("streams", cfg["batch_size"])
        if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1:
            raise ValueError(f"streams must be a positive integer (the number of streams stepped together), "
                             f"got {streams!r}")
        cfg["batch_size"] = cfg["streams"] = streams
        refresh = given.get("refresh_previous", ONLINE_REFRESH_PREVIOUS)
        if not isinstance(refresh, (bool, np.bool_)):
            raise TypeError(f"refresh_previous must be True or False (recompute the previous samples' "
                            f"activity with the current weights, or use the stored one), got {refresh!r}")
        cfg["refresh_previous"] = bool(refresh)
        if "lr_local" not in given:
            fields.pop("lr_local", None)
            cfg["lr_local"] = ONLINE_LR_LOCAL
            cfg["preset_note"] = (f"{cfg['preset_note']} Online mode: lr_local {ONLINE_LR_LOCAL} "
                                  f"(tuned with {ONLINE_DELAYS} pairs per sample; the batch eta_l collapses "
                                  "with the stored previous activity and stalls with the refreshed one)")
        if not 0 < cfg["beta"] <= 1:
            raise ValueError(f"beta must be in (0, 1], got {cfg['beta']!r}")
        cfg["rate_rule"] = given.get("rate_rule", "per-sample")
        if cfg["rate_rule"] not in RATE_RULES:
            raise choice_error("rate_rule", cfg["rate_rule"], RATE_RULES)
        cfg["rate_streams"] = RATE_STREAMS
        cfg["delays"] = given.get("delays", ONLINE_DELAYS)
        d = cfg["delays"]
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"delays must be an integer >= 1 (each sample paired with its stream's K previous "
                             f"samples), got {d!r}")
    else:
        for key, flag in (("streams", "--streams"), ("beta", "--beta"), ("shared_b3", "--per-stream-b3"),
                          ("rate_rule", "--rate-rule"), ("delays", "--delays"),
                          ("refresh_previous", "--refresh-previous / --stored-previous")):
            if key in given:
                raise ValueError(f"{key} needs mode='online' ({flag} needs --mode online)")
        cfg["streams"] = None
    cfg["column"] = presets.column_label(cfg["rule"], cfg["grouping"], cfg["kernel"])
    if not isinstance(cfg["batchnorm"], bool):
        raise TypeError(f"batchnorm must be True or False, got {cfg['batchnorm']!r}")
    if cfg["batchnorm"] and cfg["rule"] == "last-layer":
        raise ValueError("batchnorm needs rule 'backprop', 'cosine' or 'gaussian': with 'last-layer' the "
                         "hidden layers stay at their random start and batchnorm would have nothing to learn")
    for key, value in fields.items():
        if key not in given:
            cfg[key] = value
    if not local:
        if "lr_local" in given:
            raise ValueError(f"lr_local: rule={cfg['rule']!r} has no local learning rate")
        cfg["lr_local"] = None
    if cfg["grouping"] == "plain":
        if "groups" in given:
            raise ValueError("groups needs grouping 'grp' or 'grp+div' (plain has no groups)")
        cfg["groups"] = None
    if cfg["augment"] is None:
        cfg["augment"] = dataset_info(cfg["dataset"]).augment
    _validate(cfg)
    if is_conv and "eval_batch_size" not in given:
        cfg["eval_batch_size"] = conv_eval_batch_size(cfg)
    if cfg["backend"] is None:
        cfg["backend"] = default_backend()
    if "p" in given and cfg["grouping"] == "plain":
        raise ValueError("p needs grouping 'grp' or 'grp+div' (p is the exponent of the group "
                         "normalisation, Eq. 18, 21; plain has no groups)")
    if "p" not in given:
        cfg["p"] = presets.GROUPING_P[cfg["grouping"]]
    # local rules, no batchnorm, no adaptive optimiser (Sec. 4.3 on AdamW and batchnorm)
    cfg["plausible"] = (presets.learning_of(cfg["rule"]) in ("local", "last-layer") and not cfg["batchnorm"]
                        and cfg["optimizer"] == "sgd")
    cfg["hidden"] = None if is_conv else [int(h) for h in cfg["hidden"]]
    cfg["milestones"] = [int(m) for m in cfg["milestones"]]
    from threefactor import __version__
    cfg["version"] = __version__
    return cfg


def _check_arch(cfg, given):
    """Validate arch/width/hidden; True for a conv arch."""
    arch, width = cfg["arch"], cfg["width"]
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if arch == "mlp":
        if width != 1:
            raise ValueError(f"width={width} needs a conv arch (--arch {' or '.join(ARCHS)} or a "
                             "block string); the MLP's widths are --hidden")
        return False
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string, got {type(arch).__name__}")
    try:
        parse_arch(arch, width)
    except ValueError as exc:
        raise ValueError(f"{exc}; or arch='mlp'") from None
    if "hidden" in given:
        raise ValueError(f"hidden is the MLP's option; arch={arch!r} is a conv net: write its fc "
                         "layers in the arch string instead (e.g. --arch conv32-pool-conv64-pool-fc256)")
    return True


def _conv_preset(cfg, given, cell):
    """(fields to fill where not given, preset name, note) of a conv run (Table 6).

    An explicit Table 6 preset (``cell``) is already in ``cfg``.  Otherwise the run takes
    Table 6's shared settings and, where Table 6 has the column, its cell's learning
    rates and groups (``cifar10-vgg[2x][-bn]-<column>``, by width and batchnorm; with
    batchnorm also AdamW and LReLU, the AdamW + batchnorm rows).
    """
    if cell is not None:
        return {}, cfg["preset"], "Table 6"
    suffix = {"plain": "", "grp": "-grp", "grp+div": "-grpdiv"}[cfg["grouping"]]
    rule = _rule_slug(cfg)
    bn = "bn-" if cfg["batchnorm"] else ""
    name = f"cifar10-vgg{'2x' if cfg['width'] == 2 else ''}-{bn}{rule}{suffix}"
    fields = dict(CONV_SHARED)
    if cfg["batchnorm"]:
        fields.update({k: v for k, v in TABLE6_BN.items() if k != "batchnorm"})
    elif cfg["rule"] == "backprop":
        fields["milestones"] = TABLE6_SHARED["milestones_backprop"]
    if name in TABLE6:
        fields.update({k: TABLE6[name][k] for k in ("lr_out", "lr_local", "groups")})
        if (cfg["dataset"], cfg["arch"]) == ("cifar10", "vgg"):
            return fields, name, f"Table 6 cell {name}"
        note = _borrowed_note(cfg, given, name)
        if fields["groups"] and "groups" not in given:
            fitted = _fitting_groups(cfg, fields["groups"])
            if fitted != fields["groups"]:
                note += (f"; groups {fitted} instead of the cell's {fields['groups']}, the largest count that "
                         f"divides every conv layer's channels of {cfg['arch']}")
                fields["groups"] = fitted
        return fields, name, note
    local = presets.learning_of(cfg["rule"]) == "local"
    need = [k for k, flag in (("lr_out", True), ("lr_local", local),
                              ("groups", cfg["grouping"] != "plain")) if flag and k not in given]
    if need:
        raise ValueError(f"Table 6 has no conv cell for {cfg['rule']} {cfg['grouping']} "
                         f"(its cells: cifar10-vgg[2x][-bn]-backprop, -cosine, -gaussian ...): give "
                         f"{', '.join('--' + k.replace('_', '-') for k in need)}")
    arch = cfg["arch"] if cfg["arch"] in ARCHS else "conv"
    return fields, f"{dataset_slug(cfg['dataset'])}-{arch}-{bn}{rule}{suffix}", "no Table 6 cell: learning rates given"


def _fitting_groups(cfg, groups):
    """The largest divisor of ``groups`` that divides the channel count of every conv layer of the net
    (a borrowed Table 6 cell's count may not fit a narrower net, e.g. 64 groups for 32 channels)."""
    channels = [block[1] for block in parse_arch(cfg["arch"], cfg["width"]) if block[0] == "conv"]
    return int(np.gcd.reduce([int(groups), *channels]))


def _borrowed_note(cfg, given, name):
    """Why a conv net other than vgg on cifar10 runs with a Table 6 cell's settings."""
    taken = [k for k in ("lr_out", "lr_local", "groups") if k not in given and TABLE6[name][k] is not None]
    what = (f"its {', '.join(taken)} and " if taken else "") + "Table 6's shared settings (SELU, alpha dropout " \
        "0.05, batch 128, SGD momentum 0.95, milestones)"
    flags = " / ".join(f"--{k.replace('_', '-')}" for k in taken)
    return (f"the paper has conv-net hyperparameters only for vgg on cifar10 (Table 6), none for "
            f"{cfg['arch']} on {cfg['dataset']}: using Table 6 cell {name}, {what}"
            + (f"; they were tuned for vgg on cifar10, so set {flags} for this net" if taken else ""))


def conv_shapes(blocks, in_shape, kernel_size=3, padding=1):
    """[(block, input shape, output shape)] of a conv net's hidden layers (shapes without m)."""
    shape, out = tuple(int(s) for s in in_shape), []
    for block in blocks:
        if block[0] == "conv":
            ho, wo = conv.conv_out_size(shape[1], shape[2], kernel_size, kernel_size, padding)
            h2, w2 = conv.pool_out_size(ho, wo, block[2])
            if min(ho, wo, h2, w2) < 1:
                raise ValueError(f"arch: layer {block} does not fit its {shape[1]}x{shape[2]} input "
                                 "(too many pools for the image size)")
            new = (block[1], h2, w2)
        else:
            new = (block[1],)
        out.append((block, shape, new))
        shape = new
    return out


def conv_eval_batch_size(cfg, budget=EVAL_IM2COL_BYTES, cap=2000):
    """Evaluation batch of a conv net: the largest multiple of 50 (<= cap) whose largest im2col
    matrix (m·H·W, 9·C_in) fits in ``budget`` bytes."""
    per_sample = max((shape[1] * shape[2] * shape[0] * 9 for block, shape, _ in
                      conv_shapes(parse_arch(cfg["arch"], cfg["width"]), dataset_info(cfg["dataset"]).image_shape)
                      if block[0] == "conv"), default=1) * np.dtype(cfg["dtype"]).itemsize
    return int(max(1, min(cap, budget // per_sample // 50 * 50 or budget // per_sample)))


def _validate(cfg):
    def positive_int(key):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key} must be a positive integer, got {v!r}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        positive_int(key)
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], (int, np.integer)) or cfg["seed"] < 0:
        raise ValueError(f"seed must be an integer >= 0, got {cfg['seed']!r}")
    if cfg["subset"] is not None:
        positive_int("subset")
    if cfg["batch_size"] < 2 and cfg.get("mode", "batch") == "batch" and presets.learning_of(cfg["rule"]) == "local":
        raise ValueError(f"batch_size must be >= 2 for the {cfg['rule']} rule: its kernel compares the pairs of "
                         f"samples in a batch (Eq. 9), so one sample gives no update; got {cfg['batch_size']} "
                         f"(for one sample at a time use --mode online)")
    is_conv = cfg.get("arch", "mlp") != "mlp"
    if not is_conv and (not isinstance(cfg["hidden"], (list, tuple)) or not cfg["hidden"] or any(
            isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in cfg["hidden"])):
        raise ValueError(f"hidden must list positive widths, got {cfg['hidden']!r}")
    if not isinstance(cfg.get("augment", False), bool):
        raise TypeError(f"augment must be True or False, got {cfg['augment']!r}")
    for key in ("lr_out", "lr_local", "dropout", "momentum", "weight_decay_local", "weight_decay_out"):
        v = cfg[key]
        if v is not None and not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {v!r}")
    if not cfg["dropout"] < 1:
        raise ValueError(f"dropout must be < 1, got {cfg['dropout']}")
    if cfg["backend"] is not None and cfg["backend"] not in backend_names():
        raise choice_error("backend", cfg["backend"], backend_names())
    if cfg["dtype"] not in DTYPES:
        raise choice_error("dtype", cfg["dtype"], DTYPES)
    if cfg["optimizer"] not in OPTIMIZERS:
        raise choice_error("optimizer", cfg["optimizer"], OPTIMIZERS)
    _check_milestones(cfg["milestones"])
    # A data root that does not exist yet is fine (searched first, then the usual places; a download goes
    # there, and the run logs which directory it read); a file cannot be one.
    if cfg["data_root"] is not None and Path(cfg["data_root"]).is_file():
        raise ValueError(f"data_root (--data-root) {str(cfg['data_root'])!r} is a file: give a folder holding "
                         f"the dataset (DIR/{cfg['dataset']}/ or its files in DIR), or where to download it")
    full_rule = make_rule(cfg)            # sigma, gamma, activation, slope, p, delta, label kernel, kernel
    if cfg["groups"] is not None and not is_conv:
        for h in cfg["hidden"]:
            full_rule.check_width(int(h))
    if is_conv:
        rule = full_rule if cfg["groups"] is not None else None
        for block, _, out in conv_shapes(parse_arch(cfg["arch"], cfg["width"]),
                                         dataset_info(cfg["dataset"]).image_shape):
            if rule is not None and block[0] == "conv" and out[0] % rule.groups:
                raise ValueError(f"groups={rule.groups} does not divide the {out[0]} channels of "
                                 f"conv layer {block} (a conv group is a block of whole channels)")
            if rule is not None:
                rule.check_width(int(np.prod(out)))


def _check_milestones(milestones):
    """Epochs after which the learning rates drop: integers >= 1, strictly increasing."""
    ms = list(milestones)
    if any(isinstance(m, bool) or not isinstance(m, (int, np.integer)) for m in ms):
        raise ValueError(f"milestones must be integer epochs, got {ms!r}")
    if any(m < 1 for m in ms):
        raise ValueError(f"milestones must be epochs >= 1 (the learning rates drop after each; 0 or less "
                         f"would lower them from epoch 1), got {ms!r}")
    if any(b <= a for a, b in zip(ms, ms[1:])):
        raise ValueError(f"milestones must be strictly increasing, got {ms!r}")


#: Settings that ``threefactor train`` reads from a resumed run's config.json (the rest have
#: defaults for configs written before they existed: arch, width, mode, augment, batchnorm, ...).
RESUME_KEYS = ("dataset", "rule", "grouping", "epochs", "seed", "lr_local", "lr_out", "groups", "data_root",
               "validation", "subset", "backend", "dtype", "eval_batch_size", "hidden", "milestones",
               "lr_factor", "batch_size", "dropout", "activation", "slope", "momentum", "weight_decay_local",
               "weight_decay_out", "sigma", "gamma", "delta", "label_kernel", "optimizer", "column")


def validate_saved(cfg, path):
    """Check a run's saved config (``path``: its config.json) before resuming it.

    ValueError naming the file and the missing or bad setting.
    """
    missing = [k for k in RESUME_KEYS if k not in cfg]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{path}: lacks the settings {', '.join(missing[:5])}{more} (expected the config.json "
                         f"that threefactor train wrote for the run)")
    try:
        canonical_dataset(cfg["dataset"])
        presets.check_column(cfg["rule"], cfg["grouping"])
        if cfg.get("mode", "batch") not in MODES:
            raise choice_error("mode", cfg["mode"], MODES)
        if cfg.get("mode") == "online" and not all(k in cfg for k in ("streams", "beta", "shared_b3")):
            raise ValueError("online mode needs streams, beta and shared_b3")
        _validate(cfg)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def make_rule(cfg):
    """The hidden layers' Rule of a resolved config."""
    return presets.make_rule(cfg["rule"], cfg["grouping"], cfg["groups"], sigma=cfg["sigma"],
                             gamma=cfg["gamma"], delta=cfg["delta"], activation=cfg["activation"],
                             slope=cfg["slope"], label_kernel=cfg["label_kernel"], kernel=cfg.get("kernel"),
                             p=cfg.get("p"))

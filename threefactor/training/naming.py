"""The training vocabulary: canonical names in a run's options and config.json.

:func:`canonical_options` turns what a user typed (any case, old spellings, a dataset by
path, a kernel by ``FILE.py:Class``) into the names ``config.json`` records;
:func:`upgrade_config` reads an older ``config.json`` in today's names (``cossim`` ->
``cosine``), so ``--resume`` and ``threefactor table`` understand every run directory;
:func:`run_name` names a run with or without a preset, :func:`start_line` describes it.
"""
from __future__ import annotations

from pathlib import Path

from threefactor.data.sample import BUNDLED
from threefactor.data.registry import canonical_dataset, dataset_slug
from threefactor.names import is_object_spec
from threefactor.rule.kernels import KERNEL_NAMES, resolve_kernel
from threefactor.rule.rules import ACTIVATION_NAMES, LABEL_KERNEL_NAMES
from threefactor.training import presets
from threefactor.training.presets import TABLE6


def canonical_options(given):
    """``given`` with every name canonical (rule, grouping, kernel, dataset, preset, activation,
    label kernel: any case, old spellings) and rule and kernel made to agree: a local rule is
    named by its kernel (``kernel="cossim"`` gives rule ``cosine``; a ``FILE.py:Class`` kernel
    rule ``local``).  ValueError naming the option with the nearest names for an unknown one."""
    out = dict(given)
    if "preset" in out:
        out["preset"] = presets.canonical_preset(out["preset"])
    if "dataset" in out:
        out["dataset"] = canonical_dataset(out["dataset"])
    if "rule" in out:
        out["rule"] = presets.canonical_rule(out["rule"])
    if "grouping" in out:
        out["grouping"] = presets.canonical_grouping(out["grouping"])
    for key, names in (("activation", ACTIVATION_NAMES), ("label_kernel", LABEL_KERNEL_NAMES)):
        if key in out:
            if not isinstance(out[key], str):
                raise TypeError(f"{key} must be a name, got {type(out[key]).__name__}")
            out[key] = names.resolve(out[key])
    kernel, rule = out.get("kernel"), out.get("rule")
    if kernel is not None:
        if not isinstance(kernel, str):
            raise TypeError(f"kernel must be a name or FILE.py:Class (what config.json can record), got "
                            f"{type(kernel).__name__}")
        if is_object_spec(kernel):
            module, _, attr = kernel.rpartition(":")
            kernel = f"{Path(module).resolve()}:{attr}" if module.endswith(".py") else kernel
            resolved = resolve_kernel(kernel)
            kernel_rule = resolved if isinstance(resolved, str) else "local"
        else:
            kernel = kernel_rule = KERNEL_NAMES.resolve(kernel)
        if rule is not None and presets.learning_of(rule) != "local":
            raise ValueError(f"kernel={kernel!r} needs a local rule, but rule={rule!r} has no kernel; "
                             "drop --kernel or --rule")
        if rule not in (None, "local", kernel_rule):
            raise ValueError(f"kernel={kernel!r} contradicts rule={rule!r} (a local rule is named by its "
                             f"kernel: give one of them)")
        out["kernel"], out["rule"] = kernel, kernel_rule
    elif rule == "local":
        out["rule"] = "gaussian"
    return out


def _need_rates(cfg, given, what):
    """ValueError naming the rate flags a configuration without a preset lacks."""
    local = presets.learning_of(cfg["rule"]) == "local"
    need = [k for k, flag in (("lr_out", True), ("lr_local", local), ("groups", cfg["grouping"] != "plain"))
            if flag and k not in given]
    if need:
        column = presets.column_label(cfg["rule"], cfg["grouping"], cfg.get("kernel"))
        flags = ", ".join("--" + k.replace("_", "-") for k in need)
        raise ValueError(f"{what} {dataset_slug(cfg['dataset'])} {column} (Table 3 covers the rules "
                         f"{', '.join(presets.RULES)} on {', '.join(presets.DATASETS)}): give {flags}")


def run_name(cfg):
    """A run's name without seed and time: its preset, else ``<dataset>-<rule>[-grp|-grpdiv]``."""
    if cfg.get("preset"):
        return cfg["preset"]
    return presets.preset_name(dataset_slug(cfg["dataset"]), _rule_slug(cfg), cfg["grouping"])


def _rule_slug(cfg):
    rule = cfg["rule"]
    if rule == "local" and cfg.get("kernel"):
        rule = cfg["kernel"].rpartition(":")[2].lower()
    return rule.replace("-", "")


def upgrade_config(cfg):
    """A saved config.json in today's vocabulary: canonical rule and grouping names (``cossim`` ->
    ``cosine``), ``kernel`` and ``p`` filled in for runs written before they were recorded, and
    ``refresh_previous: false`` and ``delays: 1`` for online runs written before they existed (they
    used the stored previous activity, one pair per sample)."""
    cfg = dict(cfg)
    if isinstance(cfg.get("rule"), str):
        cfg["rule"] = presets.canonical_rule(cfg["rule"])
    if isinstance(cfg.get("grouping"), str):
        cfg["grouping"] = presets.canonical_grouping(cfg["grouping"])
    if isinstance(cfg.get("dataset"), str) and cfg["dataset"].lower() in ("mnist", "fmnist", "kmnist", "cifar10"):
        cfg["dataset"] = cfg["dataset"].lower()
    if "rule" in cfg and "grouping" in cfg:
        if "kernel" not in cfg:
            cfg["kernel"] = cfg["rule"] if presets.learning_of(cfg["rule"]) == "local" else None
        if "p" not in cfg:
            cfg["p"] = presets.GROUPING_P.get(cfg["grouping"])
        cfg["column"] = presets.column_label(cfg["rule"], cfg["grouping"], cfg["kernel"])
    if cfg.get("mode") == "online" and "refresh_previous" not in cfg:
        cfg["refresh_previous"] = False        # online runs before the option used the stored activity
    if cfg.get("mode") == "online" and cfg.get("delays") is None:
        cfg["delays"] = 1                      # and one pair per sample (the default is 2 since issue 18)
    return cfg


def start_line(cfg, rd, is_conv):
    """The first line a new run logs: what is trained, with which hyperparameters, where."""
    borrowed = is_conv and cfg["preset"] in TABLE6 and (cfg["dataset"], cfg["arch"]) != ("cifar10", "vgg")
    source = (f"no {cfg['dataset']} conv preset in the paper, Table 6 cell {cfg['preset']} stands in (see note)"
              if borrowed else f"preset {cfg['preset']}" if cfg["preset"] else "no preset")
    return (f"{cfg['dataset']} {cfg['column']}: {source} (lr_out {cfg['lr_out']}, "
            f"lr_local {cfg['lr_local']}, groups {cfg['groups']}), "
            + (f"arch {cfg['arch']} x{cfg['width']}, " if is_conv else f"hidden {cfg['hidden']}, ")
            + ("augmented, " if cfg.get("augment") else "")
            + ("batchnorm + " + cfg["optimizer"] + " (not biologically plausible), " if cfg.get("batchnorm") else "")
            + _rule_text(cfg)
            + f"{cfg['backend']} {cfg['dtype']}, seed {cfg['seed']}"
            + (f", online ({_online_text(cfg)})" if cfg.get("mode") == "online" else "")
            + f" -> {rd.path}")


def _online_text(cfg):
    """The online settings for the start line: streams, beta, pairs per sample, and what differs from the
    defaults."""
    n = cfg["streams"]
    parts = [f"{n} stream{'' if n == 1 else 's'}", f"beta {cfg['beta']}"]
    if cfg.get("shared_b3") is False:
        parts.append("b3 per stream")
    if cfg.get("rate_rule") not in (None, "per-sample"):
        parts.append(f"{cfg['rate_rule']} rates")
    k = cfg.get("delays") or 1                   # runs before --delays: one pair per sample
    parts.append(f"{k} pair{'' if k == 1 else 's'} per sample")
    if cfg.get("refresh_previous") is False:
        parts.append("stored previous activity")
    return ", ".join(parts)


def _rule_text(cfg):
    """The rule's settings where they differ from the paper's (App. D.4), for the start line."""
    keys = ("sigma", "gamma", "activation", "slope", "delta", "label_kernel")
    changed = [f"{k} {cfg[k]}" for k in keys if k in cfg and cfg[k] != presets.SHARED.get(k)]
    if cfg.get("p") is not None and cfg["p"] != presets.GROUPING_P.get(cfg["grouping"]):
        changed.append(f"p {cfg['p']}")
    if cfg.get("kernel") and cfg["kernel"] != cfg["rule"]:
        changed.insert(0, f"kernel {cfg['kernel']}")
    return ", ".join(changed) + ", " if changed else ""


def network_label(cfg):
    """What besides the dataset tells runs apart in a row: the architecture and the mode."""
    parts = []
    arch = cfg.get("arch", "mlp") or "mlp"
    if arch != "mlp":
        width = cfg.get("width", 1) or 1
        parts.append(arch + (f" ×{width}" if width != 1 else ""))
    if cfg.get("mode", "batch") == "online":
        parts.append("online")
    if cfg.get("batchnorm", False):
        parts.append("batchnorm")
    if cfg.get("data") == BUNDLED:      # the 10k sample is another training set, never a seed of the full one
        parts.append("bundled 10k sample")
    return ", ".join(parts)

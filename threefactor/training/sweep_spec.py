"""A sweep's spec: a TOML file naming many ``threefactor train`` runs, each validated before any trains.

Format (a contract, see the README's "Sweeps")::

    seeds = [0, 1, 2]               # one run per seed of every combination (default [0])

    [base]                          # any `threefactor train` option: flag names without the dashes,
    epochs = 1                      # '-' or '_' alike; a flag without value is true / false
    subset = 2000
    hidden = [64, 64]
    backend = "numpy"

    [axes]                          # lists multiplied out, in this order
    rule = ["gaussian", "cossim"]
    lr-local = [0.5, 1.0]
    column = [                      # an axis of tables sets several options together
      { rule = "backprop", grouping = "plain" },
      { rule = "gaussian", grouping = "grp+div" },
    ]

Every key and value goes through ``threefactor train``'s own argument parser
(:func:`threefactor.cli.train.configure_parser`) and every run through
:func:`threefactor.training.config.resolve_config`, so a new ``train`` flag works in a spec
with no change here, and an axis that makes an invalid configuration (groups that do not
divide a width, a rule without that grouping) is reported before anything trains.

Each run is named from its axis values and seed (``rule=gaussian,lr-local=0.5,seed=0``): the
same spec always maps to the same run directories.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

#: top-level keys of a spec
SPEC_KEYS = ("base", "axes", "seeds")
#: ``train`` flags a sweep sets itself
_SWEEP_OWNED = {"out": "the sweep puts each run in --out DIR/<run name>",
                "resume": "a sweep resumes its interrupted runs by itself",
                "no_progress": "a sweep shows its own progress",
                "seed": "give the seeds as the top-level list seeds = [...]",
                "help": "not a training option"}
_NAME_LIMIT = 150


class SpecError(ValueError):
    """A spec that cannot be run: names the key or run and what was expected."""


def nearest(word, names, n=3):
    """The names closest to ``word`` (difflib), for 'did you mean' hints."""
    return difflib.get_close_matches(str(word), list(names), n=n, cutoff=0.5)


def _hint(word, names):
    close = nearest(word, names)
    return f"; did you mean {' or '.join(close)}?" if close else ""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):
        raise SpecError(message)


def train_parser():
    """``threefactor train``'s argument parser (raising :class:`SpecError` instead of exiting)."""
    from threefactor.cli import train
    parser = _RaisingParser(prog="threefactor train", add_help=False)
    train.configure_parser(parser)
    return parser


def option_flags(parser):
    """{spec key (underscores): (flag, action)} of the options a spec may set."""
    flags = {}
    for action in parser._actions:
        strings = [s for s in action.option_strings if s.startswith("--")]
        if not strings:
            continue
        positive = [s for s in strings if not (s.startswith("--no-") and isinstance(
            action, argparse.BooleanOptionalAction))] or strings
        key = positive[0][2:].replace("-", "_")
        if key not in _SWEEP_OWNED:
            flags[key] = (positive[0], action)
    return flags


def _toml_text(value):
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _scalar_text(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)


def option_tokens(key, value, flags, where):
    """The ``threefactor train`` flags that say ``key = value`` (validated by the parser alone)."""
    norm = key.replace("-", "_")
    if norm in _SWEEP_OWNED:
        raise SpecError(f"{where} {key}: not a sweep option ({_SWEEP_OWNED[norm]})")
    if norm not in flags:
        raise SpecError(f"{where} {key}: not a `threefactor train` option{_hint(norm.replace('_', '-'), [k.replace('_', '-') for k in flags])} "
                        f"(options: {', '.join(sorted(k.replace('_', '-') for k in flags))})")
    flag, action = flags[norm]
    shown = f"{where} {key} = {_toml_text(value)}"
    if action.nargs == 0:                       # store_true / store_false / BooleanOptionalAction
        if not isinstance(value, bool):
            raise SpecError(f"{shown}: expected true or false ({flag} takes no value)")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [flag if value else "--no-" + flag[2:]]
        return [flag] if value else []
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise SpecError(f"{shown}: expected at least one value ({flag} N [N ...])")
        if any(isinstance(v, (bool, list, dict)) for v in items):
            raise SpecError(f"{shown}: expected a list of numbers or names ({flag} N [N ...])")
        return [flag, *map(_scalar_text, items)]
    if isinstance(value, (list, dict)):
        raise SpecError(f"{shown}: expected one value, got a {'list' if isinstance(value, list) else 'table'} "
                        f"({flag} takes one value)")
    if isinstance(value, bool):
        raise SpecError(f"{shown}: expected a {action.metavar or action.dest} value, not true/false")
    return [f"{flag}={_scalar_text(value)}"]


def parse_tokens(parser, tokens, shown):
    """Parse train flags; SpecError starting with ``shown`` when the parser refuses them."""
    try:
        return parser.parse_args(tokens)
    except SpecError as exc:
        message = str(exc)
        m = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)", message)
        if m:
            message += _hint(m.group(1), [c.strip(" '\"") for c in m.group(2).split(",")])
        raise SpecError(f"{shown}: {message}") from None


@dataclass
class Run:
    """One run of a sweep: its name, its spec options and ``train`` flags, its resolved config."""

    name: str
    labels: dict                # axis name -> value label (plus "seed")
    options: dict               # spec key (underscores) -> TOML value, seed included
    argv: list                  # the equivalent `threefactor train` flags (without --out)
    config: dict = field(default=None)
    error: str = field(default=None)


@dataclass
class Spec:
    """A parsed spec: ``base`` options, ``axes`` [(name, [values])], ``seeds``."""

    base: dict
    axes: list
    seeds: list
    source: str = "spec"
    text: str = ""


def read_spec(source):
    """A :class:`Spec` from a TOML file path or an already parsed mapping."""
    if isinstance(source, Spec):
        return source
    text = ""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the spec ({exc.strerror or exc})") from None
        try:
            import tomllib
        except ImportError:         # Python < 3.11
            import tomli as tomllib
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not valid TOML ({exc})") from None
        name = str(path)
    elif isinstance(source, dict):
        doc, name = source, "spec"
    else:
        raise SpecError(f"spec must be a TOML file path or a dict, got {type(source).__name__}")
    for key in doc:
        if key not in SPEC_KEYS:
            raise SpecError(f"{name}: unknown top-level key {key!r}{_hint(key, SPEC_KEYS)} (a spec has "
                            f"[base] (train options), [axes] (lists multiplied out) and seeds = [...]; "
                            f"train options go under [base])")
    base, axes, seeds = doc.get("base", {}), doc.get("axes", {}), doc.get("seeds", [0])
    if not isinstance(base, dict):
        raise SpecError(f"{name}: base must be a table of train options ([base]), got {_toml_text(base)}")
    if not isinstance(axes, dict):
        raise SpecError(f"{name}: axes must be a table of lists ([axes]), got {_toml_text(axes)}")
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise SpecError(f"{name}: seeds must be a non-empty list of integers >= 0, got {_toml_text(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{name}: seeds lists a seed twice ({seeds}): a repeat is not another seed")
    axis_list = []
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{name}: [axes] {axis} must be a non-empty list of values, got {_toml_text(values)} "
                            f"(a single value goes under [base])")
        axis_list.append((axis, values))
    return Spec(dict(base), axis_list, list(seeds), name, text)


def _label(value):
    if isinstance(value, dict):
        return "-".join(_label(v) for v in value.values())
    if isinstance(value, list):
        return "x".join(_label(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return _scalar_text(value)


def _safe(text):
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run_name(labels):
    """The directory name of a run: ``axis=value,...,seed=N`` (file-name safe, at most 150 characters)."""
    name = ",".join(f"{_safe(k.replace('_', '-'))}={_safe(v)}" for k, v in labels.items())
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:_NAME_LIMIT - 11]}-{digest}"
    return name


def expand(spec, parser=None):
    """Every run of ``spec`` (:class:`Run`, unresolved), named; SpecError for a bad key or value."""
    parser = parser or train_parser()
    flags = option_flags(parser)
    base_tokens = []
    for key, value in spec.base.items():
        tokens = option_tokens(key, value, flags, f"{spec.source}: [base]")
        parse_tokens(parser, tokens, f"{spec.source}: [base] {key} = {_toml_text(value)}")
        base_tokens.append((key.replace("-", "_"), tokens))
    axis_choices = []
    for axis, values in spec.axes.items() if isinstance(spec.axes, dict) else spec.axes:
        choices = []
        for value in values:
            sets = value if isinstance(value, dict) else {axis: value}
            where = f"{spec.source}: [axes] {axis}" + (" (a table)" if isinstance(value, dict) else "")
            tokens = []
            for key, v in sets.items():
                t = option_tokens(key, v, flags, where)
                parse_tokens(parser, t, f"{where} {key} = {_toml_text(v)}")
                tokens.append((key.replace("-", "_"), v, t))
            choices.append((_label(value), tokens))
        axis_choices.append((axis, choices))
    runs = []
    for combo in itertools.product(*[c for _, c in axis_choices]):
        for seed in spec.seeds:
            labels, options, argv, owner = {}, {}, [], {}
            for key, tokens in base_tokens:
                owner[key] = "[base]"
                argv += tokens
            for key, value in spec.base.items():
                options[key.replace("-", "_")] = value
            for (axis, _), (label, tokens) in zip(axis_choices, combo):
                labels[axis] = label
                for key, value, t in tokens:
                    if key in owner:
                        raise SpecError(f"{spec.source}: {key.replace('_', '-')} is set by both {owner[key]} and "
                                        f"[axes] {axis}; set each option in one place")
                    owner[key] = f"[axes] {axis}"
                    options[key] = value
                    argv += t
            labels["seed"] = str(seed)
            options["seed"] = seed
            argv += [f"--seed={seed}"]
            runs.append(Run(run_name(labels), labels, options, argv))
    _name_collisions(runs)
    return runs


def _name_collisions(runs):
    """Runs whose names coincide after making them file-name safe get a hash of their options."""
    seen = {}
    for run in runs:
        seen.setdefault(run.name, []).append(run)
    for name, same in seen.items():
        if len(same) > 1:
            for run in same:
                digest = hashlib.sha1(json.dumps(run.options, sort_keys=True).encode()).hexdigest()[:8]
                run.name = f"{name}-{digest}"


_CHOICES = re.compile(r"^(\w+)=(['\"])(.*?)\2 is not one of: (.*)$")


def _with_nearest(message):
    """A 'X='v' is not one of: a, b, c' message with the nearest valid names added."""
    m = _CHOICES.match(message)
    if not m:
        return message
    close = nearest(m.group(3), [c.strip() for c in m.group(4).split(",")])
    return message + (f" (nearest: {', '.join(close)})" if close else "")


def resolve(runs, parser=None):
    """Resolve every run's config (like ``threefactor train``): ``run.config``, or ``run.error`` (the
    reason, with the nearest valid names) for a run that is not a valid configuration."""
    from threefactor.backends import BackendUnavailable
    from threefactor.training.config import DEFAULTS, resolve_config
    parser = parser or train_parser()
    for run in runs:
        args = parse_tokens(parser, run.argv, run.name)
        options = {k: v for k, v in vars(args).items() if k in DEFAULTS}
        if options.get("data_root"):        # workers may start elsewhere: the path as seen from here
            options["data_root"] = os.path.abspath(options["data_root"])
        try:
            run.config, run.error = resolve_config(**options), None
        except (ValueError, TypeError, BackendUnavailable) as exc:
            run.config, run.error = None, _with_nearest(str(exc))
    return runs


def check_resolved(runs, limit=5):
    """SpecError listing the runs that are not valid configurations (:func:`resolve`)."""
    bad = [f"{run.name}: {run.error}" for run in runs if run.error]
    if bad:
        shown = "\n  ".join(bad[:limit]) + (f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else "")
        raise SpecError(f"{len(bad)} of the {len(runs)} runs are not valid train configurations (nothing was "
                        f"trained):\n  {shown}")
    return runs

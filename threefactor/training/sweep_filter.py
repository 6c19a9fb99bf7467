"""``--only KEY=VALUE``: the runs of a sweep that have given settings (:func:`select`)."""
from __future__ import annotations

import re

from threefactor.training.sweep_spec import SpecError, _hint

def _norm_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_norm_text(v) for v in value)
    return str(value)


#: settings that are names: compared in the one vocabulary (any case, old spellings: rule=Cossim)
_NAMED = ("rule", "grouping", "kernel", "dataset", "preset", "activation", "label_kernel")


def _canonical(key, text):
    from threefactor.training.naming import canonical_options
    try:
        return canonical_options({key: text})[key]
    except (ValueError, TypeError):
        return text


def _same(text, value, key=None):
    if key in _NAMED and isinstance(value, str) and _canonical(key, text) == _canonical(key, value):
        return True
    want, have = re.sub(r"[\s\[\]]", "", text).replace("x", ",") if isinstance(value, (list, tuple)) else text, \
        _norm_text(value)
    if want == have:
        return True
    try:
        a = [float(p) for p in want.split(",")]
        b = [float(p) for p in have.split(",")]
    except ValueError:
        return False
    return a == b


def _value_of(run, key):
    if key in run.options:
        return run.options[key]
    labels = {k.replace("-", "_"): v for k, v in run.labels.items()}
    if key in labels:
        return labels[key]
    return (run.config or {}).get(key, _MISSING)


_MISSING = object()


def select(runs, only):
    """The runs matching every ``KEY=VALUE`` of ``only`` (one key given twice: either value)."""
    wanted = {}
    for item in only or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--only {item!r}: expected KEY=VALUE, e.g. --only rule=gaussian")
        wanted.setdefault(key.strip().replace("-", "_"), []).append(value.strip())
    for key, values in wanted.items():
        known = set()
        for run in runs:
            known.update(k.replace("-", "_") for k in run.labels)
            known.update(run.options)
            known.update(run.config or {})
        if key not in known:
            raise SpecError(f"--only {key.replace('_', '-')}: no run has this setting"
                            f"{_hint(key, sorted(known))}")
        for v in values:
            if not any(_same(v, _value_of(run, key), key) for run in runs):
                seen = sorted({_norm_text(_value_of(run, key)) for run in runs
                               if _value_of(run, key) is not _MISSING})
                raise SpecError(f"--only {key.replace('_', '-')}={v}: no run of this sweep has it; its values: "
                                f"{', '.join(seen)}{_hint(v, seen)}")
    return [run for run in runs
            if all(any(_same(v, _value_of(run, key), key) for v in values) for key, values in wanted.items())]

"""The PyTorch autograd baselines (MLP step, layer update), timed in their own process at their best settings.

Timed in the process that also runs ours, autograd shares the cores with our
thread pools and our heap, and with the thread settings threefactor gives its
process (:mod:`threefactor.threads`).  Here it runs alone: a child process that
imports torch before anything else (``THREEFACTOR_THREADS=keep``: threefactor
changes no thread setting there), under each of :data:`SETTINGS` (threads = all
cores or one; OpenMP workers spinning, torch's default, or sleeping), and the
fastest setting is the baseline.  The step is
:func:`threefactor.bench.step.torch_call`: layer-local losses, z = f(x wᵀ)
computed once, squared distances by one GEMM (‖v_i‖² + ‖v_j‖² - 2 v vᵀ,
:func:`threefactor.verify.torch_ref._kernel`), the layer outputs under
``no_grad``, one ``backward()`` and one SGD step.

:func:`autograd_rounds` alternates: our step timed in the calling process, then
each setting's child, ``rounds`` times, so that a load change on a shared
machine reaches both sides.  :func:`fill_update_records` does the same for the update suite's CPU
records (``threefactor bench``): one child per setting times every case after ours.  The child is
:mod:`threefactor.bench.autograd_worker`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

#: (name, torch threads: None = all usable cores, extra environment)
SETTINGS = (("threads=all", None, {}),
            ("threads=all, OMP_WAIT_POLICY=PASSIVE", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
            ("threads=1", 1, {}))


def _spawn(payload, setting, timeout=1200):
    """Run ``payload`` (JSON) in a child process under ``setting``; its JSON answer."""
    name, threads, extra = setting
    from threefactor.bench.machine import clean_environment

    env = clean_environment(False, {"THREEFACTOR_THREADS": "keep", **extra})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run([sys.executable, "-m", "threefactor.bench.autograd_worker",
                          json.dumps({**payload, "threads": threads})],
                         env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"autograd child ({name}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(hidden, m, groups, dtype, timing, setting, timeout=600):
    """One child process timing the autograd step under ``setting`` (an entry of :data:`SETTINGS`)."""
    payload = {"kind": "step", "hidden": list(hidden), "m": m, "groups": groups, "dtype": str(dtype),
               "timing": timing}
    return {"setting": setting[0], **_spawn(payload, setting, timeout)}


def fill_update_records(records, timing, settings=SETTINGS):
    """Fill the suite's CPU records' autograd keys from one child per setting (its fastest setting)."""
    cases = [(r["m"], r["n_in"], r["n_out"], r["rule"]) for r in records]
    by_setting = {}
    for setting in settings:
        by_setting[setting[0]] = _spawn({"kind": "update", "cases": cases, "dtype": records[0]["dtype"],
                                         "timing": timing}, setting)["cases"]
    for i, rec in enumerate(records):
        med = {name: res[i]["autograd"]["median_s"] for name, res in by_setting.items()}
        best = min(med, key=med.get)
        res = by_setting[best][i]
        rec.update(autograd_s=med[best], autograd_floor_s=res["torch_gemm"]["median_s"],
                   speedup_vs_autograd=med[best] / rec["update_s"],
                   autograd_own_process={"best_setting": best, "autograd_by_setting_s": med})
        low = res["autograd"]["min_s"]
        rec["fastest"].update(autograd_s=low, speedup_vs_autograd=low / rec["fastest"]["update_s"])
    return records


def choose_settings(quick=False, threads=None):
    """The settings to try: ``--threads N`` fixes torch's threads to N; ``--quick`` tries only the first;
    None otherwise (all of :data:`SETTINGS`; the step then alternates two rounds)."""
    if threads:
        return ((f"threads={threads}", int(threads), {}),)
    return SETTINGS[:1] if quick else None


def torch_available():
    """Whether PyTorch is installed, found without importing it (unlike
    :func:`threefactor.verify.torch_ref.torch_available`): importing torch here would load its OpenMP
    runtime into the process that times ours, which the child processes exist to avoid."""
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def autograd_rounds(ours, hidden, m, groups, dtype, timing, rounds=2, settings=SETTINGS, log=None):
    """Alternate ``ours()`` (a timing summary of our step, measured here) and autograd's children.

    Returns ``{"ours": [summaries], "autograd": {setting: [summaries]}, "best_setting",
    "autograd_s"`` (the best setting's median of medians), ``"ours_s"`` (median of our medians),
    ``"speedup"``: autograd_s / ours_s, ``"speedup_rounds"``: per round, the best setting over ours}.
    """
    import numpy as np

    res = {"ours": [], "autograd": {s[0]: [] for s in settings}}
    per_round = []
    for r in range(rounds):
        mine = ours()
        res["ours"].append(mine)
        best = None
        for setting in settings:
            child = run_child(hidden, m, groups, dtype, timing, setting)
            res["autograd"][setting[0]].append(child)
            best = child["median_s"] if best is None else min(best, child["median_s"])
            if log:
                log(f"  round {r + 1}: autograd ({setting[0]}, own process) {child['median_s'] * 1e3:.1f} ms")
        per_round.append(best / mine["median_s"])
        if log:
            log(f"  round {r + 1}: ours {mine['median_s'] * 1e3:.1f} ms, best autograd / ours {per_round[-1]:.2f}")
    medians = {name: float(np.median([c["median_s"] for c in runs])) for name, runs in res["autograd"].items()}
    best = min(medians, key=medians.get)
    ours_s = float(np.median([o["median_s"] for o in res["ours"]]))
    res.update(best_setting=best, autograd_s=medians[best], autograd_by_setting_s=medians, ours_s=ours_s,
               speedup=medians[best] / ours_s, speedup_rounds=per_round)
    return res

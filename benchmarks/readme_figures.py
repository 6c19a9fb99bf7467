"""Re-run the README's figures and print each quoted value beside the one its command gives now.

The README marks every figure this script checks with an HTML comment pair (invisible when rendered)::

    <!-- figure: train-default.test-2 -->68.82<!-- /figure -->

The quoted values are read from README.md, never written here, so a changed number is caught.  Groups of
figures and the command behind each (run in a child process on this checkout, ``PYTHONPATH`` set to it):

- ``train-default``: ``threefactor train`` (Fashion-MNIST, Gaussian grp+div, 2 epochs, seed 0): test
  accuracy after epochs 1 and 2 (seeded: the same digits on the same commit, backend and machine);
- ``check``: ``threefactor check``: its summary line (counts of comparisons, failures and skips);
- ``examples``: the README's ```` ```python ```` blocks (the ten-line block, the custom kernel): they run;
- ``train-100`` (``--full`` only, ~10 minutes on 2 quiet cores): ``threefactor train --epochs 100 --seed 0``:
  the final test accuracy (and, printed only, the minutes of training epochs).

Each group also has ``.commit`` and ``.machine`` figures saying where its numbers were measured.  A seeded
figure must match digit for digit when the README's machine is this one; measured on another machine it is
compared within a tolerance (rounding differs between CPUs and BLAS builds, and a run's trajectory with it).
Timings are printed, never judged (and rewritten only where the README marks them).  Exit status 1 when a
figure moved (or a command failed).

    python benchmarks/readme_figures.py              # the cheap figures (~1-3 minutes on 2 cores)
    python benchmarks/readme_figures.py --full       # and the 100-epoch run
    python benchmarks/readme_figures.py --update     # rewrite the measured figures in README.md (atomically)

``tests/test_readme_figures.py`` runs the cheap part in CI: a change that moves seeded results updates the
README in the same commit (``--update``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURE = re.compile(r"<!-- figure: (?P<key>[\w.-]+) -->(?P<value>.*?)<!-- /figure -->", re.S)
#: Seeded accuracies measured on another machine: how far (points) they may lie from the README's.  The
#: default run's second epoch is sensitive to rounding: at commit e238aad it gave 68.82 % on a 2-core Zen 4
#: (AVX-512) and 73.63 % on a 2-core Zen 3 (Haswell BLAS kernels, AVX2), its first 66.99 and 66.80 %.
TOLERANCE = {"train-default": 6.0, "train-100": 1.0}


@dataclass(frozen=True)
class Group:
    """Figures that one command measures."""
    name: str
    argv: tuple          # the command as the README gives it (after ``threefactor``); None: the examples
    seeded: tuple = ()   # keys compared digit for digit (within TOLERANCE on another machine)
    exact: tuple = ()    # keys compared as text on any machine (counts)
    timing: tuple = ()   # keys printed, never judged
    full: bool = False   # only with --full

    @property
    def command(self):
        return "threefactor " + " ".join(self.argv) if self.argv else "the README's python blocks"

    def keys(self):
        meta = (f"{self.name}.commit", f"{self.name}.machine") if self.argv else ()
        return self.seeded + self.exact + self.timing + meta


GROUPS = (
    Group("train-default", ("train",), seeded=("train-default.test-1", "train-default.test-2")),
    Group("check", ("check",), exact=("check.summary",)),
    Group("examples", None),
    Group("train-100", ("train", "--epochs", "100", "--seed", "0"), seeded=("train-100.test",),
          timing=("train-100.minutes",), full=True),
)
GROUP = {g.name: g for g in GROUPS}


# -- the README's side -------------------------------------------------------------------------------

def quoted(text):
    """{key: value} of the README's figure markers; ValueError on a key marked twice or a marker left open."""
    values = {}
    for m in FIGURE.finditer(text):
        if m.group("key") in values:
            raise ValueError(f"README figure {m.group('key')!r} is marked twice")
        values[m.group("key")] = m.group("value")
    opened = text.count("<!-- figure: ")
    if opened != len(values):
        raise ValueError(f"README has {opened} figure markers but {len(values)} closed ones "
                         "(each needs <!-- figure: KEY -->VALUE<!-- /figure -->)")
    return values


def python_blocks(text):
    """The README's ```python blocks that are code to run (the signature listing is not)."""
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "-> float" not in b]


def rewrite(text, values):
    """``text`` with the figures in ``values`` ({key: new value}) replaced; KeyError for an unmarked key."""
    missing = set(values) - set(quoted(text))
    if missing:
        raise KeyError(f"not marked in the README: {', '.join(sorted(missing))}")
    return FIGURE.sub(lambda m: f"<!-- figure: {m.group('key')} -->"
                                f"{values.get(m.group('key'), m.group('value'))}<!-- /figure -->", text)


def update_readme(values, path=README):
    """Rewrite the figures ``values`` in ``path`` in place, atomically (the old file or the new, never half)."""
    from threefactor.training.atomic import atomic_write
    path = Path(path)
    new = rewrite(path.read_text(), values)
    atomic_write(path, lambda f: f.write(new.encode()))


# -- measuring ---------------------------------------------------------------------------------------

def machine():
    """``"2-core AMD EPYC, Haswell BLAS kernels, AVX2"``: what a seeded figure's digits depend on besides
    the commit and backend.  The CPU's name alone does not say it: the same name covers CPUs on which
    OpenBLAS picks other GEMM kernels and numpy other SIMD loops (AVX-512 or not), whose rounding differs."""
    from threefactor.bench.machine import cpu_model, usable_cores
    return f"{usable_cores()}-core {cpu_model() or 'unknown CPU'}, {_blas_kernels()} BLAS kernels, {_simd()}"


def _blas_kernels():
    """The core type whose kernels numpy's BLAS uses (:func:`threefactor.bench.machine.blas_info`), or "unknown"."""
    from threefactor.bench.machine import blas_info
    return blas_info().get("architecture") or "unknown"


def _simd():
    """The widest x86 SIMD numpy dispatches to here: AVX-512, AVX2 or baseline (other CPUs: their name)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return "unknown SIMD"
    for name, label in (("AVX512_SKX", "AVX-512"), ("AVX512F", "AVX-512"), ("AVX2", "AVX2"), ("SSE42", "SSE4.2")):
        if features.get(name):
            return label
    return next((k for k, v in features.items() if v), "baseline SIMD")


def commit():
    """The checkout's short commit, ``-dirty`` when tracked files other than README.md differ from it."""
    def git(*args):
        return subprocess.run(("git", "-C", str(ROOT)) + args, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return head + ("-dirty" if any(p != "README.md" for p in changed) else "")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run(argv, timeout):
    proc = subprocess.run([sys.executable] + list(argv), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"`{' '.join(argv)}` exited with status {proc.returncode}:\n{tail}")
    return proc.stdout


def _train(group, timeout):
    with tempfile.TemporaryDirectory(prefix="readme-figures-") as tmp:
        out = Path(tmp) / "run"
        _run(("-m", "threefactor") + group.argv + ("--out", str(out), "--no-progress"), timeout)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        data = json.loads((out / "config.json").read_text()).get("data", "full")
    if data != "full":      # where no full copy is found, train falls back on a small sample: other numbers
        raise RuntimeError(f"the run trained on {data!r}, not the full Fashion-MNIST the README's figures "
                           "come from: apt-get install dataset-fashion-mnist, or set $THREEFACTOR_DATA")
    acc = [f"{r['test_accuracy']:.2f}" for r in records]
    if group.name == "train-default":
        return {"train-default.test-1": acc[0], "train-default.test-2": acc[1]}
    return {"train-100.test": acc[-1], "train-100.minutes": f"{sum(r['seconds'] for r in records) / 60:.0f}"}


def _check(group, timeout):
    text = _run(("-m", "threefactor") + group.argv, timeout)
    found = re.findall(r"^(\d+ comparisons, \d+ failed, \d+ skipped)", text, re.M)
    if not found:
        raise RuntimeError("`threefactor check` printed no summary line ('N comparisons, F failed, S skipped')")
    return {"check.summary": found[-1]}


def _examples(timeout):
    """Run each README python block in its own process; {"examples.<i>": last printed line or 'ran'}."""
    ran = {}
    for i, block in enumerate(python_blocks(README.read_text()), 1):
        out = _run(("-c", block), timeout).strip().splitlines()
        ran[f"examples.{i}"] = out[-1] if out else "ran"
    return ran


def measure(name, timeout=3600):
    """Run group ``name``'s command now: {key: value as the README would print it}, with commit and machine."""
    group = GROUP[name]
    if group.argv is None:
        return _examples(timeout)
    where = {f"{name}.commit": commit(), f"{name}.machine": machine()}     # before the code can change
    values = (_check if name == "check" else _train)(group, timeout)
    values.update(where)
    return values


# -- comparing ---------------------------------------------------------------------------------------

def compare(name, readme_values, measured):
    """Rows (key, quoted, measured, status) for group ``name``; status "ok", "MOVED", "MISSING" (not
    quoted in the README), "other machine (within ±t)", "timing" or "where"."""
    group = GROUP[name]
    if group.argv is None:
        return [(k, "runs", v, "ok") for k, v in measured.items()]
    same_machine = readme_values.get(f"{name}.machine") == measured.get(f"{name}.machine")
    rows = []
    for key in group.keys():
        have, now = readme_values.get(key), measured.get(key)
        if key in group.timing:
            status = "timing"              # printed, not judged; rewritten by --update only where quoted
        elif have is None:
            status = "MISSING"
        elif key.endswith((".commit", ".machine")):
            status = "where"
        elif have == now:
            status = "ok"
        elif key in group.seeded and not same_machine and _close(have, now, TOLERANCE[name]):
            status = f"other machine (within ±{TOLERANCE[name]:g})"
        else:
            status = "MOVED"
        rows.append((key, have, now, status))
    return rows


def _close(a, b, tol):
    try:
        return abs(float(a) - float(b)) <= tol
    except (TypeError, ValueError):
        return False


def failed(rows):
    """Whether any row says a figure moved or is not quoted."""
    return any(status in ("MOVED", "MISSING") for _, _, _, status in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the 100-epoch run (~10 minutes on 2 cores)")
    parser.add_argument("--update", action="store_true",
                        help="rewrite the measured figures (and their commit and machine) in README.md")
    parser.add_argument("--only", nargs="+", choices=[g.name for g in GROUPS], metavar="GROUP",
                        help=f"only these groups: {', '.join(g.name for g in GROUPS)}")
    args = parser.parse_args(argv)
    names = args.only or [g.name for g in GROUPS if args.full or not g.full]
    readme_values = quoted(README.read_text())
    bad, new = False, {}
    print(f"README figures at commit {commit()} on {machine()}\n")
    print(f"{'figure':24}  {'README':>36}  {'now':>36}  status")
    for name in names:
        print(f"-- {GROUP[name].command}")
        try:
            measured = measure(name)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, IndexError, ValueError) as exc:
            print(f"   FAILED: {exc}")
            bad = True
            continue
        rows = compare(name, readme_values, measured)
        for key, have, now, status in rows:
            print(f"{key:24}  {str(have):>36}  {str(now):>36}  {status}")
        bad |= any(status == "MISSING" for *_, status in rows) or (failed(rows) and not args.update)
        if GROUP[name].argv is not None:
            new.update({k: v for k, v in measured.items() if k in readme_values})
    if args.update and new:
        update_readme(new)
        print(f"\nREADME.md: {len(new)} figures rewritten ({', '.join(sorted(new))})")
    elif bad:
        print("\nA figure moved: if the change meant it, run  python benchmarks/readme_figures.py --update")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

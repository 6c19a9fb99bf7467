"""The speed targets of the benchmark suite, and a verdict on recorded bench JSON (``threefactor bench --targets``).

A target names one measurement (kind, backend, dtype, rule, m, layer shape) and
the bounds it must meet, all as ratios measured in one run:

``max_floor``
    ``ratio_floor`` = ours / the GEMM floor (forward + update GEMMs; the step's
    floor for a step) must be at most this;
``min_speedup``
    ``speedup_vs_autograd`` = PyTorch autograd / ours must be at least this.

Beside each verdict the table prints two lower bounds on ``ratio_floor`` that no
implementation of the rule can beat with the floor's GEMMs at the floor's speed:

``flops``
    every matrix product of the update divided by the floor's, counted in flops
    (:func:`gemm_flops`): the plain rule also multiplies v vᵀ (symmetric, so
    half of it) and A v, m × m × n_out products the floor leaves out;
``GEMMs``
    the measured time of all of them over the floor's (``gemm.all_s / floor_s``,
    in files from session 6 on).

and the speedup over autograd that ours would have at that bound (autograd's time
over the floor's times the bound, the GEMMs' where measured): where it is below
``min_speedup`` the target needs fewer matrix products than the rule is written with.

The peak-memory target (extra memory O(m² + m·n), never O(m²·n)) is judged on
every update record: the peak over m² + m·(n_in + n_out) + n_out·n_in elements
(the kernel matrices, the layer's activity, and ΔW itself) must stay below
:data:`MEMORY_FACTOR`.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

#: most elements of an update's extra memory per element of m² + m·(n_in + n_out) + n_out·n_in
MEMORY_FACTOR = 8.0


@dataclass(frozen=True)
class Target:
    """One speed target: which record it reads and the bounds it must meet."""

    name: str
    kind: str                       # "update" or "step"
    backend: str
    max_floor: float
    min_speedup: float
    m: int = 256
    rule: str | None = None         # update targets: a bench variant name
    shape: tuple | None = None      # update targets: (n_in, n_out)
    dtype: str = "float32"

    def matches(self, kind, record):
        if kind != self.kind or record.get("backend") != self.backend or record.get("dtype") != self.dtype:
            return False
        if record.get("m") != self.m:
            return False
        if self.kind == "update":
            return record.get("rule") == self.rule and (record.get("n_in"), record.get("n_out")) == self.shape
        return True


TARGETS = (
    Target("CPU update, Gaussian grp+div", "update", "numba", 1.25, 1.5, 256, "gauss-grp+div", (1024, 1024)),
    Target("CPU update, Gaussian plain", "update", "numba", 1.25, 1.5, 256, "gauss", (1024, 1024)),
    Target("CPU MLP step (3 x 1024, batch 256)", "step", "numba", 1.3, 2.0, 256),
    Target("GPU update, Gaussian grp+div", "update", "cupy", 1.3, 1.5, 1024, "gauss-grp+div", (4096, 4096)),
    Target("GPU update, Gaussian plain", "update", "cupy", 1.3, 1.5, 1024, "gauss", (4096, 4096)),
)


def gemm_flops(rule, m, n_in, n_out, groups=32):
    """(floor, all): flops of the floor (forward x wᵀ and update postᵀ x, 2·m·n_in·n_out each) and of
    every product the rule needs, which adds the kernel Gram v vᵀ (m·m·d, symmetric: half of it suffices)
    and the Laplacian A v (2·m·m·d); d = n_out for the plain rules, the group count for grouped ones."""
    floor = 4 * m * n_in * n_out
    d = n_out if rule in ("gauss", "cossim") else groups
    return floor, floor + m * m * d + 2 * m * m * d


def _bounds(record):
    """The two lower bounds on ratio_floor (see the module docstring); None where unknown."""
    flops = None
    if record.get("rule"):
        floor, every = gemm_flops(record["rule"], record["m"], record["n_in"], record["n_out"])
        flops = every / floor
    gemm = record.get("gemm") or {}
    measured = gemm["all_s"] / gemm["floor_s"] if gemm.get("all_s") and gemm.get("floor_s") else None
    return flops, measured


def read_document(path, flag="--targets"):
    """The bench JSON document (update or step) at ``path``; a ValueError naming ``flag`` and the
    file for one that cannot be read, is not JSON, or is not a bench result."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {path!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not text"
        raise ValueError(f"{flag}: {path!r} is not JSON ({why})") from None
    if (not isinstance(doc, dict) or doc.get("kind") not in ("update", "step")
            or not isinstance(doc.get("results"), list) or not isinstance(doc.get("machine"), dict)):
        raise ValueError(f"{flag}: {path!r} is not a threefactor bench result (expected a JSON object with "
                         "kind 'update' or 'step', 'machine' and 'results', as bench --json writes)")
    return doc


def load(paths, flag="--targets"):
    """(label, document) for each bench JSON path (:func:`read_document`).

    Among several paths (a glob such as ``benchmarks/results/*.json``), a JSON file that is some other
    result (``bench_env.py``'s, say) is skipped with a note on stderr; one that cannot be read or is not
    JSON is still an error, and so is a set of paths holding no bench result at all."""
    docs, skipped = [], []
    for path in paths:
        try:
            doc = read_document(path, flag)
        except ValueError as exc:
            if len(paths) == 1 or "is not a threefactor bench result" not in str(exc):
                raise
            skipped.append((path, exc))
            continue
        docs.append((_label(path, doc), doc))
    if not docs:
        raise skipped[0][1]
    for path, _ in skipped:
        print(f"{flag}: skipped {path} (not an update or step result of threefactor bench)", file=sys.stderr)
    return docs


def _label(path, doc):
    machine = doc.get("machine") or {}
    where = (machine.get("gpu") or {}).get("name") if machine.get("gpu") else machine.get("cpu")
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.basename(path)} ({where or '?'}, {str(machine.get('date', '?'))[:10]})"


def verdicts(docs, targets=TARGETS):
    """One row per (target, matching record): the readings, the bounds and whether each bound is met."""
    rows = []
    for target in targets:
        for label, doc in docs:
            for record in doc["results"]:
                if not target.matches(doc["kind"], record):
                    continue
                floor, speedup = record.get("ratio_floor"), record.get("speedup_vs_autograd")
                flops, measured = _bounds(record)
                bound = measured or flops
                floor_s = (record.get("gemm") or {}).get("floor_s")
                ceiling = (record["autograd_s"] / (floor_s * bound)
                           if bound and floor_s and record.get("autograd_s") else None)
                rows.append({
                    "target": target.name, "file": label, "speedup_ceiling": ceiling,
                    "ratio_floor": floor, "max_floor": target.max_floor,
                    "floor_met": floor is not None and floor <= target.max_floor,
                    "speedup": speedup, "min_speedup": target.min_speedup,
                    "speedup_met": None if speedup is None else speedup >= target.min_speedup,
                    "bound_flops": flops, "bound_gemms": measured,
                })
    return rows


def memory_verdicts(docs):
    """Per update record with a peak: its elements per element of m² + m·(n_in + n_out) + n_out·n_in."""
    rows = []
    for label, doc in docs:
        if doc["kind"] != "update":
            continue
        for r in doc["results"]:
            if r.get("peak_mem_bytes") is None:
                continue
            item = 8 if r["dtype"] == "float64" else 4
            m, n_in, n_out = r["m"], r["n_in"], r["n_out"]
            per = r["peak_mem_bytes"] / item / (m * m + m * (n_in + n_out) + n_out * n_in)
            rows.append({"file": label, "backend": r["backend"], "rule": r["rule"], "m": m,
                         "shape": f"{n_in}×{n_out}", "per_element": per, "met": per <= MEMORY_FACTOR})
    return rows


def markdown(docs):
    """The verdict as Markdown: the speed targets, then the memory bound; and a one-line tally."""
    f2 = lambda x: "-" if x is None else f"{x:.2f}"
    mark = lambda ok: "-" if ok is None else ("met" if ok else "**missed**")
    rows = verdicts(docs)
    lines = ["| target | file | ours / floor | ≤ | | autograd / ours | ≥ | | floor bound: flops | GEMMs "
             "| autograd / ours at the bound |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['file']} | {f2(r['ratio_floor'])} | {r['max_floor']} | "
                     f"{mark(r['floor_met'])} | {f2(r['speedup'])} | {r['min_speedup']} | {mark(r['speedup_met'])} | "
                     f"{f2(r['bound_flops'])} | {f2(r['bound_gemms'])} | {f2(r['speedup_ceiling'])} |")
    if not rows:
        lines.append("| (no record in these files is one of the targets' measurements) | | | | | | | | | | |")
    mem = memory_verdicts(docs)
    if mem:
        worst = max(mem, key=lambda r: r["per_element"])
        lines += ["", f"Peak extra memory, {len(mem)} update records: at most {worst['per_element']:.2f} elements "
                      f"per element of m² + m·(n_in + n_out) + n_out·n_in (≤ {MEMORY_FACTOR:g}: {mark(worst['met'])}; "
                      f"{worst['backend']} {worst['rule']}, m = {worst['m']}, {worst['shape']})."]
    checks = [r[k] for r in rows for k in ("floor_met", "speedup_met") if r[k] is not None]
    checks += [worst["met"]] if mem else []
    lines += ["", f"{sum(checks)} of {len(checks)} bounds met."]
    return "\n".join(lines)

"""Prove that every rule's explicit update is -dL/dW (in the spirit of torch.autograd.gradcheck).

For a rule variant and a backend, :func:`check_rule` draws a small problem
(x (m, n_in), w (n_out, n_in), labels (m,)), computes the explicit update
``local_update(..., backend=b)`` and compares it with three independent
references of -dL/dW, each computed in float64 from the literal objective
:func:`threefactor.verify.naive.objective` (or its PyTorch twin):

``fd``       central finite differences, the 4th-order stencil
             (-L(w+2h) + 8L(w+h) - 8L(w-h) + L(w-2h)) / 12h, h = 1e-4, on every synapse;
``complex``  complex-step derivatives Im L(w + i h e_nk) / h, h = 1e-30: no
             subtraction, so exact to ~1e-15 — this is what lets us assert 1e-10;
``torch``    ``backward()`` through :func:`threefactor.verify.torch_ref.objective_torch`
             (skipped when torch is not installed).

Relative error (the number compared with the tolerance)::

    max_rel_error = max_nk |ΔW_nk - ref_nk| / max_nk |ref_nk|

i.e. the largest deviation measured against the largest reference entry (so
that tiny entries do not blow it up); ``worst`` is the synapse (n, k) where
|ΔW - ref| is largest, with ΔW and ref there.  Tolerances (``TOLERANCES``):
complex and torch 1e-10 in float64 (typically ~1e-15), fd 1e-6.

A researcher's own kernel is checked the same way.  Any object with
``matrix(v, xp)`` and ``pullback(v, K, C, xp)`` (see :mod:`threefactor.rule.kernels`)::

    from threefactor import Rule, check_rule

    class Polynomial:
        '''k(a, b) = (aᵀb / s + 1)^d, smooth, complex- and torch-safe.'''
        def __init__(self, s=4.0, d=3):
            self.s, self.d = s, d
        def matrix(self, v, xp):                     # (m, dim) -> (m, m)
            return (v @ v.T / self.s + 1.0) ** self.d
        def pullback(self, v, K, C, xp):             # C = dL/dK -> dL/dv (m, dim)
            B = C * self.d * (v @ v.T / self.s + 1.0) ** (self.d - 1) / self.s
            return (B + B.T) @ v

    results = check_rule(Rule(kernel=Polynomial(), groups=4, p=0.5))
    assert all(r.ok for r in results)

or from the shell: ``threefactor check --kernel-module my_module:Polynomial``.
A ``matrix`` that is not complex-safe (``abs``, ``maximum``, comparisons)
cannot be differentiated by the complex step: this is detected (the complex
derivative then disagrees with finite differences, or raises) and the complex
method is reported as SKIP with the reason; fd and torch still decide.
For torch, ``matrix`` is called with ``xp=torch``.

Conv layers (Sec. 4.3, App. D.1) are checked by the same driver
(:func:`check_conv_rule`): a 3×3 conv layer (C_in 2 -> C_out 6 on 4×4 images,
m = 4, groups of 2 channels) with and without 2×2 max pooling, against
complex-step derivatives of the literal conv objective
(:func:`threefactor.verify.naive.conv_objective`); their rows are named
``conv/<kernel>/<grouping>/<activation>/pool=<None|max>``.  So are layers with
batchnorm (:func:`check_batchnorm_rule`: ΔW, Δγ and Δβ).  The matrices of
variants that ``threefactor check`` runs are :mod:`threefactor.verify.variants`.

Command line: ``threefactor check`` (:mod:`threefactor.cli.check`) prints one table row per
(variant, backend, method), exits 0 (all pass), 1 (a failure) or 2 (bad use), ``--json`` writes the
results atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from threefactor.verify import naive
from threefactor.rule.batchnorm import BatchNorm
from threefactor.rule.conv_rule import conv_layer_pass
from threefactor.rule.kernels import kernel_object
from threefactor.api import local_update, prepare_conv
from threefactor.backends import available_backends, get_backend
from threefactor.rule.rules import COSINE_EPS, Rule
from threefactor.verify.torch_ref import _MISSING, autograd_update, torch_available

METHODS = ("fd", "complex", "torch")
#: Tolerances on max_rel_error per dtype of the explicit update and method.
TOLERANCES = {
    "float64": {"fd": 1e-6, "complex": 1e-10, "torch": 1e-10},
    "float32": {"fd": 1e-3, "complex": 1e-3, "torch": 1e-3},
}
FD_STEP = 1e-4
COMPLEX_STEP = 1e-30


class GradcheckError(AssertionError):
    """The explicit update differs from a reference -dL/dW by more than the tolerance."""


@dataclass
class CheckResult:
    """One comparison: explicit update of ``backend`` vs reference ``method``.

    ``passed`` is None when the method was skipped (``note`` says why).
    ``worst`` is the synapse (n, k); ``explicit``/``reference`` its two values.
    """

    variant: str
    backend: str
    method: str
    dtype: str
    max_rel_error: float
    worst: tuple
    explicit: float
    reference: float
    passed: Optional[bool]
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.passed is not False

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def relative_error(explicit, reference):
    """(max|ΔW - ref| / max|ref|, worst synapse (n, k)) of two (n_out, n_in) arrays."""
    explicit = np.asarray(explicit, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if explicit.shape != reference.shape:
        raise ValueError(f"explicit update has shape {explicit.shape}, reference {reference.shape}")
    diff = np.abs(explicit - reference)          # a NaN is the worst entry (argmax finds it)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    err = float(diff[worst]) / scale if scale > 0 else float(diff[worst])
    return err, tuple(int(i) for i in worst)


def assert_update_matches(explicit, reference, *, tolerance=1e-10, what="explicit update",
                          method="reference"):
    """Raise :class:`GradcheckError` unless max|ΔW - ref| / max|ref| <= tolerance.

    Returns the relative error.  The message names the worst synapse (n, k) and
    gives both values there side by side.
    """
    err, (n, k) = relative_error(explicit, reference)
    if not err <= tolerance:
        e = float(np.asarray(explicit)[n, k])
        r = float(np.asarray(reference)[n, k])
        raise GradcheckError(
            f"{what} differs from the {method} -dL/dW: max relative error {err:.3e} > tolerance "
            f"{tolerance:.0e} (relative error = max|dW - ref| / max|ref|); worst synapse "
            f"(n={n}, k={k}): explicit {e:.15e} vs {method} {r:.15e}")
    return err


def _backend_names():
    """Backends usable here, registered ones included (a backend whose module does not load counts
    as unavailable)."""
    return available_backends()


def _compare(name, backend, method, dtype, got, ref, tol, note=""):
    """The :class:`CheckResult` of explicit ``got`` against reference ``ref`` (2-D arrays; ``ref`` None:
    the method was skipped, ``note`` says why).  The one comparison every check below makes."""
    if ref is None:
        return CheckResult(name, backend, method, dtype, float("nan"), (-1, -1), float("nan"),
                           float("nan"), None, tol, note)
    err, worst = relative_error(got, ref)
    return CheckResult(name, backend, method, dtype, err, worst, float(np.asarray(got)[worst]),
                       float(np.asarray(ref)[worst]), bool(err <= tol), tol, note)


def variant_name(rule: Rule, grouping=None) -> str:
    """e.g. ``gaussian/grp+div/lrelu``; without ``grouping``, ``grp(p=0.5)`` or ``plain``."""
    if grouping is None:
        grouping = "plain" if rule.groups is None else f"grp(p={rule.p:g})"
    name = f"{rule.kernel_name}/{grouping}/{rule.activation}"
    return name + ("/ylinear" if rule.label_kernel == "linear" else "")


def make_problem(m=6, n_in=5, n_out=8, n_classes=3, seed=0, rule=None, margin=0.02):
    """A small seeded problem (x, w, labels); every class present when m >= n_classes.

    Pre-activations closer than ``margin`` to the kink of relu/lrelu/selu are
    redrawn, so finite differences never straddle it.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(m) % n_classes)
    for _ in range(100):
        x = rng.normal(size=(m, n_in))
        w = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        if rule is None or rule.activation == "linear" or np.abs(x @ w.T).min() > margin:
            break
    return x, w, labels


def _objective_of_w(x, labels, n_classes, rule):
    return lambda w: naive.objective(x, w, labels, n_classes, rule)


def fd_gradient(f, w, h=FD_STEP):
    """-df/dw by 4th-order central finite differences, every entry (float64)."""
    w = np.asarray(w, dtype=np.float64)
    g = np.empty_like(w)
    for idx in np.ndindex(*w.shape):
        vals = []
        for s in (2, 1, -1, -2):
            wp = w.copy()
            wp[idx] += s * h
            vals.append(float(np.real(f(wp))))
        g[idx] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return -g


def complex_step_gradient(f, w, h=COMPLEX_STEP):
    """-df/dw by the complex step Im f(w + i h e_nk) / h, every entry (needs a complex-safe f)."""
    w = np.asarray(w, dtype=np.float64)
    g = np.empty_like(w)
    for idx in np.ndindex(*w.shape):
        wc = w.astype(np.complex128)
        wc[idx] += 1j * h
        g[idx] = np.imag(f(wc)) / h
    return -g


def reference_updates(x, w, labels, n_classes, rule, methods=METHODS):
    """{method: (reference -dL/dW in float64 or None, note)} at the float64 point (x, w)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    f = _objective_of_w(x, labels, n_classes, rule)
    refs = {}
    user_kernel = not isinstance(rule.kernel, str)
    fd = fd_gradient(f, w) if "fd" in methods or user_kernel else None
    if "fd" in methods:
        refs["fd"] = (fd, "")
    if "complex" in methods:
        try:
            cs = complex_step_gradient(f, w)
            if not np.all(np.isfinite(cs)):
                raise ValueError("the complex-step derivative is not finite")
            if user_kernel and not relative_error(cs, fd)[0] <= TOLERANCES["float64"]["fd"]:
                raise ValueError("the complex-step derivative disagrees with finite differences")
            refs["complex"] = (cs, "")
        except Exception as exc:  # a user kernel that is not complex-safe
            refs["complex"] = (None, f"kernel.matrix is not complex-safe ({exc}); "
                                     "fd and torch decide")
    if "torch" in methods:
        if not torch_available():
            refs["torch"] = (None, _MISSING)
        else:
            try:
                refs["torch"] = (autograd_update(x, w, labels, n_classes, rule, dtype=np.float64), "")
            except Exception as exc:  # a user kernel whose matrix() does not take xp=torch
                refs["torch"] = (None, f"kernel.matrix(v, torch) failed: {exc}")
    return refs


def _update_kwargs(rule):
    if rule.cosine_eps != COSINE_EPS:
        raise ValueError("local_update has no cosine_eps argument: check with the default cosine_eps")
    return dict(kernel=rule.kernel, sigma=rule.sigma, gamma=rule.gamma, activation=rule.activation,
                slope=rule.slope, groups=rule.groups, p=rule.p, delta=rule.delta,
                label_kernel=rule.label_kernel)


def _probe_kernel(rule, m, n_out, seed):
    """Call a user kernel once through :class:`threefactor.rule.kernels.UserKernel`, so that a wrong shape,
    dtype or NaN is reported by name before the references (which call it unchecked) run into it."""
    d = rule.groups or n_out
    v = np.random.default_rng(seed).normal(size=(m, d))
    k = kernel_object(rule)
    K = k.matrix(v, np)
    k.pullback(v, K, np.ones_like(K), np)


def check_rule(rule=None, *, backends=None, dtype=np.float64, m=6, n_in=5, n_out=8, n_classes=3,
               seed=0, methods=METHODS, kernel=None, tolerances=None, raise_on_failure=False,
               name=None):
    """Compare ``local_update`` of each backend with the reference -dL/dW of each method.

    Parameters
    ----------
    rule : Rule or dict of Rule fields, optional (default ``Rule()``)
    backends : sequence of str, optional
        Default: every backend available here.  An unavailable one raises BackendUnavailable.
    dtype : float32 or float64
        dtype of the explicit update (references are float64 at the same point).
    m, n_in, n_out, n_classes, seed : problem size and seed (see :func:`make_problem`).
    methods : subset of ("fd", "complex", "torch")
    kernel : str or kernel object, optional
        Replaces the rule's kernel (e.g. a user kernel).
    tolerances : dict method -> float, optional (default ``TOLERANCES[dtype]``)
    raise_on_failure : bool
        Raise :class:`GradcheckError` at the first failure.
    name : str, optional
        Variant name in the results (default :func:`variant_name`).

    Returns
    -------
    list of CheckResult, one per (backend, method).
    """
    if rule is not None and not isinstance(rule, (Rule, dict)):
        raise TypeError(f"rule must be a threefactor.Rule or a dict of its fields, got {type(rule).__name__} "
                        f"{rule!r}" + ("; for a kernel by name: check_rule(kernel=...)" if isinstance(rule, str)
                                       else ""))
    rule = Rule() if rule is None else Rule(**rule) if isinstance(rule, dict) else rule
    if kernel is not None:
        rule = rule.with_(kernel=kernel)
    rule.check_width(n_out)
    for arg, value, low in (("m", m, 2), ("n_in", n_in, 1), ("n_out", n_out, 1), ("n_classes", n_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if not isinstance(rule.kernel, str):
        _probe_kernel(rule, m, n_out, seed)
    if rule.kernel == "cosine" and rule.groups == 2:
        raise ValueError("groups=2 with the cosine kernel is degenerate (v = (a, -a), so K = ±1 and "
                         "dL/dW ~ 0): check with groups giving >= 3 groups")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods={sorted(unknown)} are not among: {', '.join(METHODS)}")
    dt = np.dtype(dtype)
    if dt.name not in TOLERANCES:
        raise ValueError(f"dtype={dt.name!r} is not one of: {', '.join(TOLERANCES)}")
    tol = dict(TOLERANCES[dt.name], **(tolerances or {}))
    backends = _backend_names() if backends is None else tuple(backends)
    x, w, labels = make_problem(m, n_in, n_out, n_classes, seed, rule)
    x, w = x.astype(dt), w.astype(dt)       # references at exactly the point the backend sees
    refs = reference_updates(x, w, labels, n_classes, rule, methods)
    name, results = name or variant_name(rule), []
    for b in backends:
        dw = local_update(x, w, labels, n_classes=n_classes, backend=b, **_update_kwargs(rule))
        for method in methods:
            ref, note = refs[method]
            res = _compare(name, b, method, dt.name, dw, ref, tol[method], note)
            if raise_on_failure and res.passed is False:
                assert_update_matches(dw, ref, tolerance=tol[method], method=method,
                                      what=f"local_update({name}, backend={b}, {dt.name})")
            results.append(res)
    return results


def check_conv_rule(rule, pool=None, *, backends=("numpy",), dtype=np.float64, m=4, c_in=2, hw=4,
                    c_out=6, kernel_size=3, padding=1, n_classes=3, seed=0, name=None):
    """Compare a conv layer's update with complex-step -dL/dW of :func:`threefactor.verify.naive.conv_objective`.

    Returns a list of :class:`CheckResult` (method "complex"), one per backend; ΔW is compared
    as (C_out, C_in·kh·kw), so the worst synapse is (output channel, flattened (c, dy, dx)).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(m) % n_classes)
    x = rng.normal(size=(m, c_in, hw, hw)).astype(dtype)
    w = (rng.normal(size=(c_out, c_in, kernel_size, kernel_size)) / np.sqrt(c_in * kernel_size ** 2)).astype(dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = complex_step_gradient(
        lambda v: naive.conv_objective(x64, v, labels, n_classes, rule, padding, pool), w64).reshape(c_out, -1)
    dt = np.dtype(dtype).name
    name = name or f"conv/{rule.kernel_name}/{'plain' if rule.groups is None else f'grp(p={rule.p:g})'}/" \
                   f"{rule.activation}/pool={pool}"
    results = []
    for b in backends:
        be, xb, wb, lab, n, to_user = prepare_conv(x, w, labels, b, n_classes, padding, pool, rule.groups)
        dw = np.asarray(to_user(conv_layer_pass(rule, xb, wb, lab, n, be, padding, pool).update()))
        results.append(_compare(name, b, "complex", dt, dw.reshape(c_out, -1), ref, TOLERANCES[dt]["complex"]))
    return results


#: Parameters of a layer with batchnorm compared by :func:`check_batchnorm_rule`, in ``layer.params()`` order.
BN_PARAMS = ("W", "gamma", "beta")


def _batchnorm_problem(layer_kind, rule, m, n_classes, seed):
    """(x, w, γ, β, labels, naive L(w, γ, β)) of a small float64 problem."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(m) % n_classes)
    if layer_kind == "dense":
        n_in, n_out = 5, 2 * (rule.groups or 3)
        x = rng.normal(size=(m, n_in))
        w = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        eye = np.eye(n_out)

        def loss(w_, g_, b_):
            return naive.objective(naive.batchnorm(x @ w_.T, g_, b_), eye, labels, n_classes, rule)
    else:
        c_out = 2 * (rule.groups or 3)
        x = rng.normal(size=(m, 2, 4, 4))
        w = rng.normal(size=(c_out, 2, 3, 3)) / np.sqrt(18)

        def loss(w_, g_, b_):
            return naive.conv_objective(x, w_, labels, n_classes, rule, 1, "max", bn=(g_, b_))
    gamma = rng.uniform(0.5, 1.5, w.shape[0])
    beta = rng.normal(0.0, 0.3, w.shape[0])
    return x, w, gamma, beta, labels, loss


def _batchnorm_deltas(layer_kind, rule, w, bn, x, labels, n_classes, be):
    """[ΔW, Δγ, Δβ] of one training pass of a dense or conv layer (2×2 max pool) with batchnorm ``bn``."""
    from threefactor.rule.conv_rule import conv_local_step
    from threefactor.rule.engine import local_step
    if layer_kind == "dense":
        return local_step(rule, x, w, labels, n_classes, be, rule.grouped, bn)[1]
    return conv_local_step(rule, x, w, labels, n_classes, be, 1, "max", rule.grouped, bn)[1]


def check_batchnorm_rule(rule, layer_kind="dense", *, backends=("numpy",), dtype=np.float64, m=6,
                         n_classes=3, seed=0, name=None):
    """Compare (ΔW, Δγ, Δβ) of a layer with batchnorm with the complex-step gradient of the naive objective.

    ``layer_kind`` is "dense" or "conv" (3×3 conv, C_in 2, 4×4 images, 2×2 max pool).
    Grouped rules pass r = ẑ/u^p on (divisive), which does not change the updates.
    Returns one :class:`CheckResult` per backend and parameter
    (``worst`` is (unit or channel, flat input index); (channel, 0) for γ and β).
    """
    if layer_kind not in ("dense", "conv"):
        raise ValueError(f"layer_kind must be 'dense' or 'conv', got {layer_kind!r}")
    x, w, gamma, beta, labels, loss = _batchnorm_problem(layer_kind, rule, m, n_classes, seed)
    cast = [a.astype(dtype).astype(np.float64) for a in (w, gamma, beta)]
    refs = [complex_step_gradient(lambda v: loss(v, cast[1], cast[2]), cast[0]),
            complex_step_gradient(lambda v: loss(cast[0], v, cast[2]), cast[1]),
            complex_step_gradient(lambda v: loss(cast[0], cast[1], v), cast[2])]
    dt = np.dtype(dtype).name
    name = name or f"bn/{layer_kind}/{rule.kernel_name}/{'plain' if rule.groups is None else rule.groups}"
    results = []
    for b in backends:
        be = get_backend(b)
        bn = BatchNorm(w.shape[0], be, dtype)
        bn.gamma[...] = be.asarray(gamma.astype(dtype))
        bn.beta[...] = be.asarray(beta.astype(dtype))
        deltas = _batchnorm_deltas(layer_kind, rule, be.asarray(w.astype(dtype)), bn, be.asarray(x.astype(dtype)),
                                   be.asarray(labels), n_classes, be)
        for param, got, ref in zip(BN_PARAMS, deltas, refs):
            got = be.to_numpy(got).reshape(len(ref), -1).astype(np.float64)
            results.append(_compare(f"{name}: {param}", b, "complex", dt, got, ref.reshape(len(ref), -1),
                                    TOLERANCES[dt]["complex"]))
    return results

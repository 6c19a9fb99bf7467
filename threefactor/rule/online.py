"""The two-point rule in time and its third-factor circuit (Eq. 13, 57-66; App. C.1-C.2).

A hidden layer learns from a stream: at time t it pairs its activity with that of
the previous sample, t - Δt, and changes its weights by

    plain (Eq. 57, App. B.2)   ΔW_nk = M_t · Δz_n · Δ(f'_n x_k)
    grouped (Eq. 63a, 66)      ΔW_nk = s · M_t · Δv_α(n) · Δ(h_n x_k),   h = f' ⊙ ẑ/u^p,  s = 2(1-p)/g

where Δq = q_t - q_{t-Δt}.  The third factor comes from a small circuit (App. C)::

    b1 = ‖Δz‖²   (plain, Eq. 59)      or  ‖Δv‖² = Σ_α b̃_α², b̃_α = Δv_α   (grouped, Eq. 64-65)
    b2 = γ k(y_t, y_{t-Δt}) - 2 exp(-b1 / 2σ²)                               (Eq. 60)
    b3 ← β b2 + (1 - β) b3           running average of b2                  (Eq. 61)
    M  = -(b2 - b3) exp(-b1 / 2σ²) / σ²                                      (Eq. 62)

The label signal is only "same class or not": k(y_t, y_{t-Δt}) = 1 or -1/(n-1) (Eq. 35).

Normalisation.  With b3 replaced by the mean of b2 over all m² ordered pairs of a
batch (i = j included), b2 - b̄2 = γ k̊y - 2 k̊z, so M = (2 k̊z - γ k̊y) k / σ², and
the mean over those pairs of the updates above *is* the batch update
``threefactor.local_update`` (= -dL/dW, Eq. 40-48); the sum over the pairs is m²
times it (and without the constant s, m² g / 2(1-p) times it).  That is proven in
tests/test_online.py to float64 round-off.  Every update here is the *mean* over
the B streams of a step, so its expectation over random pairs is the gradient
and learning rates are on the batch rule's scale (the estimate is noisier: on
Fashion-MNIST 0.3 worked best for one pair per sample, 0.5 for two, where the batch rule uses 1.0).
Training multiplies the rate by B/256 (``threefactor.training.config.rate_scale``), so
that every sample moves W alike whatever the number of streams B.

Which previous activity.  The functions here take both activities as given.  A stream keeps the
activity of its previous sample from when it was seen, computed with the weights of one step ago;
B streams stepped together therefore pair samples B samples' updates apart, and Δv then also holds
the change of W over the last step.  :class:`threefactor.nn.online_layer.OnlineLayer` with
``refresh=True`` (the default of ``threefactor train --mode online``) recomputes it with the
current weights, so that both samples of a pair are seen under the same W at any B.

Order of Eq. 61-62.  M is centred with the running average of the *previous*
pairs (b3_{t-1}), then b3 is updated with b2_t, so a pair's own b2 never enters
its centring.  Updating first, as the order of the equations suggests, would
multiply M by the constant (1 - β).  The estimate is still not exactly unbiased:
b3_{t-1} holds β b2_{t-1}, and the pair (t-1, t-2) shares x_{t-1} with the
current pair (t, t-1), so the centring is correlated with the pair it centres.
With one b3 per stream (the default) that is a bias of order β; with one b3
shared by B streams (``shared_b3``) a stream's own b2 is 1/B of the mean, a bias
of order β/B.  Measured in tests/test_online.py (w fixed, 2000 streams, one
problem; the size depends on the data): the mean update projected on
``local_update`` is 0.89 (plain) / 0.75 (grouped) of it at β = 1, 0.98 / 0.95
at β = 0.2 and 1.00 at β = 0.01 with per-stream b3, and 1.00 with a shared b3
even at β = 1.  A stream's first pair has no
average yet and starts b3 at its own b2 (M = 0), unless ``b3_init`` is given.

Shapes: B streams, x (B, n_in), W (n_out, n_in), z / h (B, n_out), v (B, d)
with d = n_out (plain) or c groups; circuit variables (B,), per-group factors (B, c).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import numpy as np

from threefactor.arrays import real_array
from threefactor.backends import backend_of, get_backend
from threefactor.validate import check_finite, check_labels, check_lr
from threefactor.rule.rules import Rule


@dataclass(frozen=True)
class TwoPointRule:
    """The online rule: a Gaussian :class:`~threefactor.rule.rules.Rule` plus its circuit.

    Parameters
    ----------
    rule : Rule
        Kernel (Gaussian only: the two-point form exists for it alone), σ, γ,
        activation, groups c, p, δ.  ``label_kernel`` must be "cosine" (Eq. 35):
        the circuit only learns whether two labels are equal.
    n_classes : int
        Number of classes n of Eq. 35.
    beta : float in (0, 1]
        Rate of the running average b3 (Eq. 61).
    divisive : bool
        Pass r = ẑ/u^p on (Eq. 21) instead of z; needs groups.
    shared_b3 : bool
        One b3 for all streams, updated with the streams' mean b2, instead of
        one b3 per stream (each stream its own circuit, the default).
    b3_init : float or None
        Initial b3; None starts a stream at its first b2.
    """

    rule: Rule = field(default_factory=Rule)
    n_classes: int = 10
    beta: float = 0.01
    divisive: bool = False
    shared_b3: bool = False
    b3_init: Optional[float] = None

    def __post_init__(self):
        if not isinstance(self.rule, Rule):
            raise TypeError(f"rule must be a threefactor.Rule, got {type(self.rule).__name__}")
        if self.rule.kernel != "gaussian":
            raise ValueError(f"the two-point rule needs kernel='gaussian' (Eq. 13, 57; other kernels have "
                             f"no two-point 3-factor form), got kernel={self.rule.kernel_name!r}")
        if self.rule.label_kernel != "cosine":
            raise ValueError("the two-point rule needs label_kernel='cosine' (Eq. 35: the circuit only "
                             f"knows whether two labels are equal), got {self.rule.label_kernel!r}")
        beta = check_beta(self.beta)
        n = self.n_classes
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"n_classes must be an integer >= 2 (Eq. 35), got {n!r}")
        self.rule.check_divisive(self.divisive)
        if self.b3_init is not None:
            try:
                b3_init = float(self.b3_init)
            except (TypeError, ValueError):
                raise TypeError(f"b3_init must be a finite number or None (the initial running average b3, "
                                f"Eq. 61), got {type(self.b3_init).__name__} {self.b3_init!r}") from None
            if not np.isfinite(b3_init):
                raise ValueError(f"b3_init must be a finite number or None, got {self.b3_init!r}")
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "n_classes", int(n))

    def label_signal(self, same, dtype=np.float64, xp=np):
        """k(y_t, y_{t-Δt}) of Eq. 35 from a boolean array ``same`` (B,): 1 or -1/(n-1)."""
        off = -1.0 / (self.n_classes - 1)
        return off + (1.0 - off) * same.astype(dtype)

    def update_scale(self, n_out: int) -> float:
        """s: 1 (plain) or 2(1-p)/g (grouped, Eq. 47), the constant of the batch normalisation."""
        g = self.rule.check_width(n_out)
        return 2.0 * (1.0 - self.rule.p) / g if self.rule.grouped else 1.0


def check_beta(beta) -> float:
    """β as a float in (0, 1], else a ValueError naming ``beta``."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a number in (0, 1], got {type(beta).__name__}") from None
    if not (0.0 < b <= 1.0):
        raise ValueError(f"beta must be in (0, 1] (rate of the running average b3, Eq. 61), got {beta!r}")
    return b


class NonFiniteError(ValueError):
    """An input or the weights of an online step hold NaN or Inf (``what`` names which).

    Training (:mod:`threefactor.training.loop`) reports it as a diverged run, not as bad use."""

    #: called with the argument's name by :func:`threefactor.validate.check_finite`
    names_argument = True

    def __init__(self, what, message=None):
        super().__init__(message or f"{what} contains NaN or Inf")
        self.what = what


def _forward_error(x, w, what):
    """The error for a non-finite pre-activation x wᵀ on the host: which input is to blame."""
    for arr, name in ((w, "w"), (x, what)):
        if not np.isfinite(arr).all():
            return NonFiniteError(name)
    return NonFiniteError(f"{what} @ wᵀ", f"{what} @ wᵀ overflowed {x.dtype} (not finite although {what} and w "
                          f"are): the weights or inputs are far too large")


class Activity(NamedTuple):
    """A layer's activity at one time, for B streams (backend arrays).

    x : (B, n_in) pre-synaptic input;  z : (B, n_out) activity f(x Wᵀ)
    h : (B, n_out) post-synaptic factor of the Hebbian term: f'(a) (plain), f' ⊙ ẑ/u^p (grouped)
    v : (B, d) what the kernel compares: z (plain) or v of Eq. 18 (grouped)
    out : (B, n_out) what the layer passes on: z, or r = ẑ/u^p if divisive (Eq. 21)
    """

    x: Any
    z: Any
    h: Any
    v: Any
    out: Any


def layer_activity(trule: TwoPointRule, x, w, backend, what="x", a=None) -> Activity:
    """The forward pass of one time step (Eq. 1, 17-18, 21): one GEMM plus elementwise work.

    ``a``: the pre-activation x wᵀ where it was computed already (fused with the previous step's
    SGD step, :class:`threefactor.nn.optim.PendingStep`); then no GEMM here.
    On the host the pre-activation a = x wᵀ (B, n_out) is checked to be finite (cheap next to the
    GEMM; a NaN or Inf in row n of w makes column n of a non-finite), else a ValueError naming w or
    ``what`` (x's name in the error).  Device arrays are not read back.
    """
    rule = trule.rule
    if a is None:
        a, z, fp = backend.forward(x, w, rule.activation, rule.slope)
    else:
        z, fp = backend.activation(a, rule.activation, rule.slope)
    if isinstance(a, np.ndarray) and not np.isfinite(a).all():
        raise _forward_error(x, w, what)
    if not rule.grouped:
        return Activity(x, z, fp, z, z)
    zhat, u, v = backend.group_stats(z, rule.groups, rule.p, rule.delta)
    r = backend.divisive_norm(zhat, u, rule.p)
    return Activity(x, z, fp * r, v, r if trule.divisive else z)


class Circuit(NamedTuple):
    """The circuit variables of one step (App. C), each (B,) unless said.

    b1 : ‖Δz‖² or ‖Δv‖² (Eq. 59, 65);  b2 : Eq. 60;  b3 : the centring used (Eq. 61)
    M : the third factor shared by the layer (Eq. 62)
    group : (B, c) per-group signals b̃_α = Δv_α (Eq. 64), or None for the plain rule;
            the factor of group α is M · b̃_α (Eq. 66)
    """

    b1: Any
    b2: Any
    b3: Any
    M: Any
    group: Optional[Any]


def circuit_b2(trule: TwoPointRule, now: Activity, prev: Activity, same, xp=np):
    """(Δv (B, d), b1 (B,), k = exp(-b1/2σ²) (B,), b2 (B,)) of Eq. 59-60 / 64-65."""
    dv = now.v - prev.v
    return (dv,) + change_b2(trule, dv, same, xp)


def change_b2(trule: TwoPointRule, dv, same, xp=np):
    """(b1, k, b2), each (B,), from the change Δz or Δv (B, d) and ``same`` (B,) (Eq. 59-60, 65).

    Also what the continuous-time read-outs feed (:mod:`threefactor.rule.continuous`).
    """
    b1 = (dv * dv).sum(axis=1)
    k = xp.exp(b1 * (-0.5 / trule.rule.sigma ** 2))
    b2 = trule.rule.gamma * trule.label_signal(same, dv.dtype, xp) - 2.0 * k
    return b1, k, b2


def centred_factor(trule: TwoPointRule, dv, b1, k, b2, b3) -> Circuit:
    """The third factor M_t of the two-point rule given the centring b3 (scalar or (B,)) (Eq. 58, 62, 66).

    Eq. 58 is M_t = -(γ k̊(y_t, y_{t-Δt}) - 2 k̊(z_t, z_{t-Δt})) k(z_t, z_{t-Δt}) / σ²; the circuit
    has b2 = γ k(y_t, y_{t-Δt}) - 2 k(z_t, z_{t-Δt}) (Eq. 60) and centres it by its running average
    b3 (Eq. 61), so M = -(b2 - b3) k / σ² (Eq. 62); with groups each group's factor is M · Δv_α (Eq. 66).
    """
    b3 = b3 + 0 * b2                                   # broadcast to (B,)
    M = -(b2 - b3) * k / trule.rule.sigma ** 2
    return Circuit(b1, b2, b3, M, dv if trule.rule.grouped else None)


class TwoPointUpdate(NamedTuple):
    """ΔW of a step as R rank-one terms: ΔW = postᵀ pre, never formed unless asked.

    post : (R, n_out) [post_t; -post_{t-Δt}] × third factor × s / B
    pre : (R, n_in) [x_t; x_{t-Δt}]

    R = 2B for one pair per stream; with K delays (:class:`~threefactor.nn.online_layer.OnlineLayer`)
    R = B (K + 1): the K pairs of a stream share x_t, whose terms are summed into one row.
    """

    post: Any
    pre: Any

    def dense(self):
        """ΔW (n_out, n_in) = postᵀ pre (one GEMM)."""
        return self.post.T @ self.pre


def two_point_factor(trule: TwoPointRule, circ: Circuit, now: Activity, prev: Activity, scale, xp=np):
    """The third factor of Eq. 57 / 63a spread over the post-synaptic units: c (B, n_out), so that a
    pair's terms are post_t = c ⊙ h_t and post_{t-Δt} = -c ⊙ h_{t-Δt}.

    plain: c = s M Δz (h = f')
    grouped: c = s M b̃_α(n) (Eq. 66; h = f' ⊙ ẑ/u^p)
    """
    if circ.group is None:
        return (scale * circ.M)[:, None] * (now.z - prev.z)
    g = now.z.shape[1] // circ.group.shape[1]
    return xp.repeat((scale * circ.M)[:, None] * circ.group, g, axis=1)


def two_point_post(trule: TwoPointRule, circ: Circuit, now: Activity, prev: Activity, scale, xp=np):
    """The post-synaptic terms of Eq. 57 / 63a with their third factor: (R, n_out), R = 2B,
    [c ⊙ h_t; -c ⊙ h_{t-Δt}] with c from :func:`two_point_factor`."""
    c = two_point_factor(trule, circ, now, prev, scale, xp)
    return xp.concatenate([c * now.h, -(c * prev.h)], axis=0)


def two_point_update(x_now, x_prev, w, labels_now, labels_prev, trule: TwoPointRule, b3=None,
                     backend="numpy"):
    """The mean over B pairs (t, t-Δt) of the two-point update, as a dense ΔW (n_out, n_in).

    Parameters
    ----------
    x_now, x_prev : (B, n_in)
        Inputs at t and t - Δt of each pair.
    w : (n_out, n_in)
    labels_now, labels_prev : (B,) integer labels
    trule : TwoPointRule
    b3 : float, array (B,) or None
        Centring of b2.  None: exact centring, the mean of b2 over the B pairs
        given; with all m² ordered pairs of a batch the result is ``local_update``.

    Inputs are checked (shapes, real dtypes, integer labels in [0, n_classes) on the host,
    finiteness); for device arrays the finiteness of x_now, x_prev and w is one read-back.
    """
    if not isinstance(trule, TwoPointRule):
        raise TypeError(f"trule must be a threefactor.rule.online.TwoPointRule, got {type(trule).__name__}")
    be = get_backend(backend)
    xp = be.xp
    x_now, x_prev, w = (real_array(be, a, name) for a, name in ((x_now, "x_now"), (x_prev, "x_prev"), (w, "w")))
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (n_out, n_in), got shape {tuple(w.shape)}")
    trule.rule.check_width(w.shape[0])
    if x_now.ndim != 2 or x_now.shape[1] != w.shape[1] or x_now.shape[0] == 0:
        raise ValueError(f"x_now must have shape (B, n_in) = (B, {w.shape[1]}) with B >= 1 pairs, "
                         f"got {tuple(x_now.shape)}")
    if x_prev.shape != x_now.shape:
        raise ValueError(f"x_prev must have the shape of x_now {tuple(x_now.shape)} (one pair per row), "
                         f"got {tuple(x_prev.shape)}")
    B = x_now.shape[0]
    labels_now = check_labels(be, labels_now, "labels_now", (B,), trule.n_classes)
    labels_prev = check_labels(be, labels_prev, "labels_prev", (B,), trule.n_classes)
    dt = np.result_type(x_now.dtype, x_prev.dtype, w.dtype)
    dt = dt if dt in (np.float32, np.float64) else np.dtype(np.float64)
    x_now, x_prev, w = (be.asarray(a, dtype=dt) for a in (x_now, x_prev, w))
    if xp is np:
        for arr, name in ((x_now, "x_now"), (x_prev, "x_prev"), (w, "w")):
            check_finite(arr, name, error=NonFiniteError)
    elif not be.scalars([xp.isfinite(x_now).all() & xp.isfinite(x_prev).all() & xp.isfinite(w).all()])[0]:
        raise NonFiniteError("x_now, x_prev or w")
    if b3 is not None:
        b3 = real_array(be, b3, "b3")
        if b3.shape not in ((), (B,)):
            raise ValueError(f"b3 must be a number or an array of shape (B,) = ({B},), got shape {tuple(b3.shape)}")
        check_finite(b3, "b3", error=NonFiniteError)
        b3 = be.asarray(b3, dtype=dt)
    now = layer_activity(trule, x_now, w, be, "x_now")
    prev = layer_activity(trule, x_prev, w, be, "x_prev")
    same = labels_now == labels_prev
    parts = circuit_b2(trule, now, prev, same, xp)
    circ = centred_factor(trule, *parts, parts[3].mean() if b3 is None else b3)
    post = two_point_post(trule, circ, now, prev, trule.update_scale(w.shape[0]) / x_now.shape[0], xp)
    return TwoPointUpdate(post, xp.concatenate([now.x, prev.x], axis=0)).dense()


def apply_update(w, update: TwoPointUpdate, lr, fused=True, backend=None):
    """W += lr · ΔW in place, without forming ΔW (one pass over W, or in-place BLAS for large R).

    The accumulation is the backend primitive :meth:`~threefactor.backends.base.Backend.accumulate`
    (``backend``: a name or object; default the backend w belongs to); ``fused=False`` is the
    reference ``w += lr · postᵀ pre`` on host weights.

    ``lr`` must be a finite number >= 0 and the update's shapes must fit w; a host update with
    NaN or Inf is refused before w is touched (device updates are not read back).
    """
    lr = check_lr(lr)
    R = update.post.shape[0]
    if update.post.shape != (R, w.shape[0]) or update.pre.shape != (R, w.shape[1]):
        raise ValueError(f"update has post {tuple(update.post.shape)} and pre {tuple(update.pre.shape)}; "
                         f"w {tuple(w.shape)} needs (R, {w.shape[0]}) and (R, {w.shape[1]})")
    check_finite(update.post, "update.post", error=NonFiniteError)
    check_finite(update.pre, "update.pre", error=NonFiniteError)
    if R == 0 or lr == 0:
        return w
    be = get_backend(backend) if backend is not None else backend_of(w)
    if be is None:
        raise TypeError(f"w is a {type(w).__module__}.{type(w).__name__}, an array of no registered backend")
    if not fused and isinstance(w, np.ndarray):
        w += w.dtype.type(lr) * update.dense()
        return w
    return be.accumulate(w, update.post, update.pre, lr)

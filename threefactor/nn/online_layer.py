"""A hidden layer that learns online: B streams stepped together, each pairing t with t - Δt.

:class:`OnlineLayer` keeps each stream's previous activity and its circuit state
(b3, Eq. 61) and runs the two-point rule of :mod:`threefactor.rule.online` one step
at a time.  A step of B streams is one forward GEMM, O(B n_out) circuit work and
one pass over W for the update; B = 1 is the strictly sequential case::

    layer = OnlineLayer(w, Rule(sigma=5, gamma=2), beta=0.01, streams=16, n_classes=10)
    for x_t, y_t in stream:                 # x_t (16, n_in), y_t (16,)
        out, update = layer.step(x_t, y_t)  # update.dense() is ΔW (n_out, n_in)
        layer.apply(update, lr=1e-2)        # W += lr ΔW in one fused pass

or ``out = layer.learn(x_t, y_t, lr)``.  With ``record=True`` the circuit
variables of every step are kept in a :class:`CircuitRecord`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from threefactor.arrays import real_array
from threefactor.backends import get_backend
from threefactor.nn.layers import HiddenLayer
from threefactor.rule.online import Activity, NonFiniteError, TwoPointRule, TwoPointUpdate, apply_update, centred_factor, circuit_b2, layer_activity, two_point_factor
from threefactor.validate import check_finite, check_labels
from threefactor.nn.circuit_record import CircuitRecord
from threefactor.rule.rules import Rule

__all__ = ["CircuitRecord", "OnlineLayer", "OnlineHiddenLayer", "make_online"]


class OnlineLayer:
    """A hidden layer trained by the two-point rule on B streams at once.

    Parameters
    ----------
    w : array (n_out, n_in)
        Weights, finite and C-contiguous (a view such as ``W.T`` is refused: pass
        ``np.ascontiguousarray(W.T)``, which the layer then owns).  float32 or float64
        arrays are kept and updated in place by :meth:`apply`; other real dtypes are
        copied to float64, and a host array given to the cupy backend is copied to the device.
    rule : Rule or TwoPointRule
        The layer's rule; a plain :class:`~threefactor.rule.rules.Rule` is wrapped in a
        :class:`~threefactor.rule.online.TwoPointRule` with the keywords below.
    beta, n_classes, divisive, shared_b3, b3_init
        See :class:`~threefactor.rule.online.TwoPointRule` (ignored if ``rule`` is one).
    streams : int
        B, the number of independent streams stepped together.
    delays : int
        K: each sample is paired with its stream's K previous samples (Δt = 1, ..., K), not only
        the last one; ΔW is the mean over the B·K pairs (fewer in a stream's first K steps) and b3
        averages their b2.  More pairs per sample, the same at any B.  Default 1 (Eq. 57 / 63a);
        ``threefactor train --mode online`` uses 2 (``--delays``).  The K pairs share x_t, so the update
        has B (K + 1) rank-one terms.
    refresh : bool
        Recompute the previous samples' activity with the current weights at each step (one more
        forward pass, of the B·K previous inputs) instead of using the activity stored when they
        were seen.  The stored activity was computed with the weights of one step ago: at B = 1 that
        is one sample's update, at B streams B samples' worth, so Δv = v_t - v_{t-Δt} also carries
        the change of W over the last step, a bias that grows with B (on Fashion-MNIST at B = 256 the
        batch rule's rate 1.0 collapses with it: 63.6 % after epoch 1, 37.5 % after 5).  Refreshed,
        every pair compares two samples under the same weights, as a stream at B = 1 nearly does.
        Default False here (the circuit as App. C draws it);
        ``threefactor train --mode online`` turns it on (``--stored-previous`` turns it off).
    backend : str or backend object
        "numpy", "numba" or "cupy" for the forward pass and the circuit.
    record : bool
        Keep the circuit variables of every step in ``self.record``.
    """

    def __init__(self, w, rule=None, *, beta=0.01, streams=1, n_classes=10, divisive=False,
                 shared_b3=False, b3_init=None, backend="numpy", record=False, delays=1, refresh=False):
        if not isinstance(refresh, (bool, np.bool_)):
            raise TypeError(f"refresh must be True or False (recompute the previous samples' activity with the "
                            f"current weights, or use the stored one), got {refresh!r}")
        self.refresh = bool(refresh)
        if isinstance(rule, TwoPointRule):
            self.trule = rule
        else:
            self.trule = TwoPointRule(Rule() if rule is None else rule, n_classes=n_classes, beta=beta,
                                      divisive=divisive, shared_b3=shared_b3, b3_init=b3_init)
        self.backend = be = get_backend(backend)
        if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1:
            raise ValueError(f"streams must be an integer >= 1 (B, the number of streams), got {streams!r}")
        self.streams = int(streams)
        if isinstance(delays, bool) or not isinstance(delays, (int, np.integer)) or delays < 1:
            raise ValueError(f"delays must be an integer >= 1 (K previous samples paired with each), got {delays!r}")
        self.delays = int(delays)
        w = real_array(be, w, "w")
        if w.ndim != 2:
            raise ValueError(f"w must be 2-D (n_out, n_in), got shape {tuple(w.shape)}")
        if w.dtype not in (np.float32, np.float64):
            w = np.ascontiguousarray(w, dtype=np.float64) if isinstance(w, np.ndarray) else w.astype(np.float64)
        if not w.flags.c_contiguous:
            raise ValueError(f"w must be C-contiguous (the layer updates it in place, row by row), got a "
                             f"non-contiguous view of shape {tuple(w.shape)} (e.g. W.T): pass "
                             f"np.ascontiguousarray(w), which the layer then owns and updates")
        if isinstance(w, np.ndarray):
            check_finite(w, "w", error=NonFiniteError)
        elif not be.scalars([be.xp.isfinite(w).all()])[0]:          # once, at construction
            raise ValueError("w contains NaN or Inf")
        self.w = be.asarray(w)
        self.scale = self.trule.update_scale(w.shape[0])
        self.record: Optional[CircuitRecord] = CircuitRecord() if record else None
        self.reset()

    @property
    def shape(self):
        return tuple(self.w.shape)

    @property
    def activity(self):
        """The last step's :class:`~threefactor.rule.online.Activity` (None before the first step)."""
        return self._prev

    def reset(self):
        """Forget every stream's previous sample and its running average b3."""
        self._prev = None
        self._prev_labels = None
        self._older = []            # (Activity, labels) at t - 2, t - 3, ... (delays > 1)
        self.b3 = None
        self.t = 0

    def state(self):
        """The streams' state as host arrays (for checkpoints): {} before the first step.

        Keys: t; b3 (scalar or (B,); shape (0,) before the first pair, which starts it); labels (B,);
        and the previous activity
        ``prev.x`` (B, n_in), ``prev.z``, ``prev.h``, ``prev.out`` (B, n_out), ``prev.v`` (B, d).
        """
        if self._prev is None:
            return {}
        to_np = self.backend.to_numpy
        b3 = np.zeros(0, self.w.dtype) if self.b3 is None else np.asarray(to_np(self.b3))
        out = {"t": np.asarray(self.t), "b3": b3, "labels": to_np(self._prev_labels)}
        out.update({f"prev.{k}": to_np(v) for k, v in self._prev._asdict().items()})
        for d, (act, lab) in enumerate(self._older, start=2):          # delays > 1: t - 2, t - 3, ...
            out[f"labels{d}"] = to_np(lab)
            out.update({f"prev{d}.{k}": to_np(v) for k, v in act._asdict().items()})
        return out

    def load_state(self, state):
        """Restore what :meth:`state` returned (an empty dict resets the streams).

        Everything is checked before anything is kept: the keys, each array's shape against this
        layer (streams, n_in, n_out, groups), finiteness, integer labels in [0, n_classes), and b3's
        form: one value (``shared_b3=True``) or one per stream.  A ValueError names what does not fit.
        """
        self.reset()
        if not state:
            return
        arrays = self._checked_state(state)
        be = self.backend
        self._prev = Activity(**{k: be.asarray(arrays[f"prev.{k}"], dtype=self.w.dtype) for k in Activity._fields})
        self._prev_labels = be.asarray(arrays["labels"], dtype=np.int64)
        b3 = arrays["b3"]
        if b3.shape == (0,):                           # saved before the first pair: b3 not started
            self.b3 = None
        else:
            self.b3 = b3.astype(self.w.dtype)[()] if b3.ndim == 0 else be.asarray(b3, dtype=self.w.dtype)
        self.t = int(arrays["t"])
        for d in range(2, self.delays + 1):          # older samples (delays > 1), as far as saved
            if f"labels{d}" not in state:
                break
            act = {k: real_array(be, state[f"prev{d}.{k}"], f"state['prev{d}.{k}']") for k in Activity._fields}
            for k, v in act.items():
                if v.shape != arrays[f"prev.{k}"].shape:
                    raise ValueError(f"state['prev{d}.{k}'] has shape {v.shape}, state['prev.{k}'] "
                                     f"{arrays[f'prev.{k}'].shape}: they must match")
                check_finite(v, f"state['prev{d}.{k}']", be, error=NonFiniteError)
            self._older.append((Activity(**{k: be.asarray(v, dtype=self.w.dtype) for k, v in act.items()}),
                                check_labels(be, state[f"labels{d}"], f"state['labels{d}']", (self.streams,),
                                             self.trule.n_classes)))

    def _checked_state(self, state):
        """The arrays of ``state`` on the host, each checked against this layer (see :meth:`load_state`)."""
        keys = ("t", "b3", "labels") + tuple(f"prev.{k}" for k in Activity._fields)
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(missing)} (expected the dict of OnlineLayer.state())")
        be, B, (n_out, n_in) = self.backend, self.streams, self.w.shape
        arrays = {k: real_array(be, state[k], f"state[{k!r}]") for k in keys}
        arrays = {k: be.to_numpy(v) if be.is_native(v) else v for k, v in arrays.items()}
        x = arrays["prev.x"]
        if x.shape != (B, n_in):
            raise ValueError(f"state holds {x.shape[0] if x.ndim else 0} streams of "
                             f"{x.shape[1] if x.ndim == 2 else '?'} inputs, the layer has {B} of {n_in}")
        rule = self.trule.rule
        d = rule.groups if rule.grouped else n_out
        for k, shape in (("z", (B, n_out)), ("h", (B, n_out)), ("out", (B, n_out)), ("v", (B, d))):
            if arrays[f"prev.{k}"].shape != shape:
                what = f"{d} groups" if rule.grouped and k == "v" else f"{n_out} neurons"
                raise ValueError(f"state['prev.{k}'] has shape {arrays[f'prev.{k}'].shape}, this layer needs "
                                 f"{shape} ({B} streams, {what})")
        for k in keys:
            check_finite(arrays[k], f"state[{k!r}]", error=NonFiniteError)
        check_labels(be, arrays["labels"], "state['labels']", (B,), self.trule.n_classes)
        b3 = arrays["b3"]
        if b3.shape == (0,):
            pass
        elif self.trule.shared_b3 and b3.ndim != 0:
            raise ValueError(f"state['b3'] has shape {b3.shape}, one b3 per stream, but this layer shares one "
                             f"b3 across its streams (shared_b3=True): the state comes from a per-stream layer")
        elif not self.trule.shared_b3 and b3.shape != (B,):
            raise ValueError(f"state['b3'] has shape {b3.shape}, this layer keeps one b3 per stream, shape "
                             f"({B},) (shared_b3=False)" + (": the state comes from a shared-b3 layer"
                                                              if b3.ndim == 0 else ""))
        t = arrays["t"]
        if t.shape != () or t.dtype.kind not in "iu" or t < 1:
            raise ValueError(f"state['t'] must be a step count >= 1 (an integer), got {t!r}")
        return arrays

    # -- input checks ---------------------------------------------------
    # Per step on the host: shapes, dtypes, label range and finiteness of x (cheap next to the GEMM);
    # the pre-activation's finiteness covers w (layer_activity).  Device arrays are never read back.
    def _input(self, x, rows=None):
        be, n_in = self.backend, self.w.shape[1]
        x = real_array(be, x, "x")
        if rows is None and x.shape != (self.streams, n_in):
            raise ValueError(f"x must have shape (streams, n_in) = ({self.streams}, {n_in}): one sample "
                             f"per stream, got shape {tuple(x.shape)}")
        if rows is not None and (x.ndim != 2 or x.shape[1] != n_in):
            raise ValueError(f"x must have shape (m, n_in) = (m, {n_in}), got shape {tuple(x.shape)}")
        check_finite(x, "x", error=NonFiniteError)
        return be.asarray(x, dtype=self.w.dtype)

    def _labels(self, labels):
        if labels is None:
            raise ValueError(f"labels are missing for step {self.t}: step(x, labels) needs one integer "
                             f"label per stream, shape ({self.streams},)")
        return check_labels(self.backend, labels, "labels", (self.streams,), self.trule.n_classes)

    # -- the step -------------------------------------------------------
    def _centre(self, b2):
        """b3_{t-1} to centre b2_t with, then b3 ← β b2 + (1 - β) b3 (Eq. 61).

        A shared b3 started from the streams' b2 (no ``b3_init``) warms up: its rate is max(β, 1/t) at
        the t-th step with pairs, so it is the plain mean of the b2 so far until that is older than
        1/β steps.  Otherwise a small β (the per-sample rates give β/256 at B = 1) would keep the first
        step's b2, one pair at B = 1, as the centring for thousands of samples."""
        trule = self.trule
        sample = b2.mean() if trule.shared_b3 else b2.mean(axis=0)      # b2: (pairs per stream, B)
        if self.b3 is None:
            self.b3 = sample + 0 if trule.b3_init is None else sample * 0 + trule.b3_init
        centre = self.b3
        beta = max(trule.beta, 1.0 / max(self.t, 1)) if trule.shared_b3 and trule.b3_init is None else trule.beta
        self.b3 = beta * sample + (1.0 - beta) * centre
        return centre

    def step(self, x, labels, pending=None):
        """One time step of all streams: forward pass, circuit and update (not applied).

        Parameters
        ----------
        x : (streams, n_in)
            Each stream's sample at time t.
        labels : (streams,) integers in [0, n_classes)
        pending : :class:`threefactor.nn.optim.PendingStep`, optional
            The previous step's SGD step of ``w``, deferred (:meth:`threefactor.nn.network.Network.deferred_steps`):
            applied here before W is read, fused with this step's forward pass where the backend can
            (one pass over W per sample at B = 1).

        Returns
        -------
        out : (streams, n_out)
            What the layer passes on (z, or r if divisive).
        update : TwoPointUpdate
            ΔW = update.dense() (n_out, n_in), the mean over streams of Eq. 57 / 63a;
            zero (no terms) at a stream's first step.
        """
        try:
            x = self._input(x)
            labels = self._labels(labels)
        except Exception:
            if pending is not None:                  # bad input: W still gets the step it was owed
                pending.apply()
            raise
        be, xp, trule = self.backend, self.backend.xp, self.trule
        pairs = [] if self._prev is None else [(self._prev, self._prev_labels)] + self._older  # Δt = 1, ..., K
        if pairs and self.refresh:
            # the previous samples' activity recomputed with the current weights, in the same forward
            # pass as x_t: one read of W per step ([x_t; x_{t-1}; ...], B (K + 1) rows)
            xs = xp.concatenate([x] + [p.x for p, _ in pairs], axis=0)
        else:
            xs = x
        a = None if pending is None else pending.apply(xs)    # the deferred step, with a = xs wᵀ if fused
        act = layer_activity(trule, xs, self.w, be, a=a)
        if xs is x:
            now = act
        else:
            B = self.streams
            now, *prev = (Activity(*(f[i * B:(i + 1) * B] for f in act)) for i in range(len(pairs) + 1))
            pairs = [(p, lab) for p, (_, lab) in zip(prev, pairs)]
        if not pairs:
            update = TwoPointUpdate(xp.zeros((0, self.w.shape[0]), self.w.dtype),
                                    xp.zeros((0, self.w.shape[1]), self.w.dtype))
        else:
            parts = [circuit_b2(trule, now, prev, labels == lab, xp) for prev, lab in pairs]
            centre = self._centre(xp.stack([p[3] for p in parts]))
            scale = self.scale / (self.streams * len(pairs))
            factors = []
            for delay, ((prev, _), part) in enumerate(zip(pairs, parts), start=1):
                circ = centred_factor(trule, *part, centre)
                factors.append(two_point_factor(trule, circ, now, prev, scale, xp))
                if self.record is not None and delay == 1:           # the record keeps Δt = 1
                    self.record.append(self.t, circ, be.to_numpy)
            # Σ_Δt c_Δt ⊙ (h_t x_tᵀ - h_{t-Δt} x_{t-Δt}ᵀ): the K pairs share the sample at t, so its terms
            # are summed into one row per stream: rank B (K + 1), not 2 B K
            c_now = sum(factors[1:], factors[0])
            pre = xs if xs is not x else xp.concatenate([now.x] + [prev.x for prev, _ in pairs], axis=0)
            update = TwoPointUpdate(xp.concatenate([c_now * now.h] + [-(c * prev.h) for c, (prev, _) in
                                                                      zip(factors, pairs)], axis=0), pre)
            if self.delays > 1:
                self._older = pairs[:self.delays - 1]
        self._prev, self._prev_labels = now, labels
        self.t += 1
        return now.out, update

    def apply(self, update: TwoPointUpdate, lr, fused=True):
        """W += lr · ΔW in place, one pass over W (:func:`threefactor.rule.online.apply_update`)."""
        apply_update(self.w, update, lr, fused=fused, backend=self.backend)

    def learn(self, x, labels, lr, fused=True):
        """:meth:`step` then :meth:`apply`; returns the layer's output (streams, n_out)."""
        out, update = self.step(x, labels)
        self.apply(update, lr, fused=fused)
        return out

    def forward(self, x):
        """Output for any number of samples (m, n_in) -> (m, n_out), no learning, no state change."""
        return layer_activity(self.trule, self._input(x, rows=True), self.w, self.backend).out


class OnlineHiddenLayer(HiddenLayer):
    """A :class:`~threefactor.nn.layers.HiddenLayer` that learns by the two-point rule.

    Drop-in for ``MLP.hidden[k]`` (see :func:`make_online`): each mini-batch of
    B = ``streams`` samples is one step of B streams, so row b of a batch is paired
    with row b of the previous batch (random pairs under shuffling).
    :meth:`local_forward` returns ΔW = the mean two-point update over the B pairs
    (Eq. 57 / 63a) as a :class:`~threefactor.rule.online.TwoPointUpdate` (rank 2B, B (K + 1) with K delays; formed only by
    ``.dense()``; the SGD optimiser applies it in one pass over W and its momentum buffer), which
    estimates -dL/dW on the batch rule's scale (noisier, so smaller rates: ``threefactor train
    --mode online`` uses 0.5 with two pairs per sample where the batch rule uses 1.0, per step of
    256 streams; at B streams it steps with 0.5 · B/256, the same rate per sample, config
    ``rate_rule``).

    Every training batch must have B rows, with one exception: the short last batch
    of an epoch whose size is not a multiple of B.  It is taken only right after a
    full batch, and deliberately dropped by the hidden layers: passed through without
    learning, leaving the streams' state alone (the output layer still learns from it).
    Any other batch size is a ValueError naming ``streams``: a larger batch, or smaller
    ones in a row (which would leave the hidden layers never learning).
    """

    #: :meth:`local_forward` takes the layer's deferred SGD step (``pending``; Network.deferred_steps).
    takes_pending = True

    def __init__(self, w, rule: Rule, divisive=False, *, streams, n_classes, beta=0.01, shared_b3=False,
                 backend="numpy", record=False, delays=1, refresh=False):
        super().__init__(w, rule, divisive)
        self.online = OnlineLayer(w, rule, beta=beta, streams=streams, n_classes=n_classes,
                                  divisive=divisive, shared_b3=shared_b3, backend=backend, record=record,
                                  delays=delays, refresh=refresh)
        self.w = self.online.w                       # the same array: optimisers update it in place
        self._after_full = False                     # whether the last batch was a full step of B streams

    def local_forward(self, x, labels, n_classes, backend, mask=None, pending=None):
        """(out (B, n_out), [ΔW], None) of one online step; ``pending``: this layer's deferred SGD
        step, taken before W is read (fused with the forward pass: :meth:`OnlineLayer.step`).

        ΔW is the step's :class:`~threefactor.rule.online.TwoPointUpdate` (``.dense()`` forms it; the
        SGD optimiser applies it in one pass over W, :mod:`threefactor.backends._online_kernels`), or
        zeros for a short last batch.  No batch objective: one step of B streams has no m² pairs to
        take it over (B = 1: none); training logs L on a fixed evaluation batch
        (:mod:`threefactor.training.objectives`)."""
        online = self.online
        if pending is not None and (n_classes != online.trule.n_classes or x.shape[0] != online.streams):
            pending.apply()                          # not a full step: W gets its step first
            pending = None
        if n_classes != online.trule.n_classes:
            raise ValueError(f"n_classes={n_classes} but the online rule was built for "
                             f"{online.trule.n_classes} classes")
        online.w = self.w
        m, B = x.shape[0], online.streams
        if m == B:
            out, dw = online.step(x, labels, pending)   # ΔW = postᵀ pre: the optimiser applies it in one pass
        elif m < B and self._after_full:                # the epoch's short last batch: dropped on purpose
            out, dw = layer_activity(online.trule, x, self.w, backend).out, backend.xp.zeros_like(self.w)
        else:
            raise ValueError(
                f"a batch of {m} samples, but the online layer steps streams={B} streams, one sample each: "
                f"training batches must have exactly {B} rows (only an epoch's short last batch, right after "
                f"a full one, may be smaller; it is passed through without learning).  Use batches of {B}, "
                f"or make_online(net, streams={m}); with `threefactor train --mode online`, --streams at most "
                f"the number of training samples")
        self._after_full = m == B
        if mask is not None:
            out = out * mask
        return out, [dw], None


def make_online(net, *, streams, beta=0.01, shared_b3=False, delays=1, refresh=False):
    """Turn the hidden layers of a local-learning ``threefactor.nn.mlp.MLP`` online, in place.

    Each ``net.hidden[k]`` becomes an :class:`OnlineHiddenLayer` on the same weight
    array, so optimisers made before or after keep working.  ``streams`` must be the
    training batch size: ``net.train_step`` raises a ValueError for any other size,
    except an epoch's short last batch right after a full one, which the hidden layers
    pass through without learning (:class:`OnlineHiddenLayer`).  ``delays``: pairs per sample
    (:class:`OnlineLayer`).  Returns ``net``.
    """
    if getattr(net, "learning", "local") != "local":
        raise ValueError(f"online learning needs a local-learning network, got learning={net.learning!r}")
    net.hidden = [OnlineHiddenLayer(layer.w, layer.rule, layer.divisive, streams=streams,
                                    n_classes=net.n_classes, beta=beta, shared_b3=shared_b3,
                                    backend=net.backend, delays=delays, refresh=refresh)
                  for layer in net.hidden]
    return net

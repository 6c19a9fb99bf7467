"""Continuous time: reading z_t - z_{t-Δt} out of an activity trace (Section 3.3, Eq. 14-16).

Activity is a time series z (T, n) sampled every ``dt``, with a background μ
to which it returns between stimuli.  Two read-outs of the jump Δz:

**Smoothed temporal derivative** (Eq. 14), for a small fixed Δt (stimuli back to
back)::

    Δz(t) = (κ * z)(t),    κ(t) ∝ -(t - c1) e^{-c2 |t - c1|} Θ(t),   c1, c2 > 0

κ is positive for t < c1 and negative after, so κ * z compares the last c1 of
the trace with what came before.  *Normalisation*: for a step of height J at
time s the read-out at s + τ is J · S(τ), S(τ) = ∫_0^τ κ, which peaks at τ = c1
(where κ changes sign).  We scale κ so that S(c1) = 1, i.e. its positive lobe has
unit area (on the sampled grid: the positive taps sum to 1).  The read-out at
s + c1 is then exactly J: it reports z_t - z_{t-Δt} with latency c1 (see
:func:`readout_lag`).  Its total area is not exactly 0 but
-e^{-c1 c2}(1 + c1 c2) / (1 - e^{-c1 c2}(1 + c1 c2)) (−5e-4 for c1 c2 = 10), so a
constant background μ leaks in as that fraction of μ, and the previous jump J',
made Δt earlier, leaks in as J' S(c1 + Δt) ≈ J' e^{-c2 Δt}(1 + c2 Δt): Δt must be
long compared with 1/c2 (≈ 1e-3 at c2 Δt = 9).

**Memory variable** (Eq. 15-16), for long, variable gaps during which z returns
to μ::

    τ_ω dω/dt = d³ - tanh(|d|³) ω - c ω,    d = (z - μ) / s
    Δz(t) = s (1 + c)^{1/3} (κ * ω^{1/3})(t)

While |d| ≫ 1 (a stimulus) ω relaxes to d³ / (1 + c) at rate ≈ 1/τ_ω; at the
background (d ≈ 0) only the small leak c acts, so ω keeps the last large
deviation through the gap and its cube root jumps from d_old to d_new when the
next stimulus comes: κ then reads out z_new - z_old.  s is the unit of activity
in which Eq. 15 is written (deviations of a stimulus must be several s); the
factor (1 + c)^{1/3} undoes the steady state's 1/(1 + c).  Errors: the leak
shrinks a memory by e^{-c·gap/3τ_ω} and a return to μ that takes long compared
with τ_ω erodes ω on the way (keep it a small fraction of τ_ω).

Shapes: z, μ, ω, read-outs (T, n) (μ may be (n,) or a scalar); κ taps (L,).
"""
from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def _positive(name, value):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def kappa(t, c1, c2):
    """The unnormalised κ(t) = -(t - c1) e^{-c2 |t - c1|} Θ(t) of Eq. 14 (any shape)."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(t >= 0, -(t - c1) * np.exp(-c2 * np.abs(t - c1)), 0.0)


def kappa_taps(dt, c1, c2, support=None):
    """κ sampled at t = 0, dt, 2dt, ... and scaled so that its positive taps sum to 1.

    Parameters
    ----------
    dt, c1, c2 : float > 0
    support : float, optional
        Length of the kernel in time; default c1 + 12/c2 (the tail beyond is < e^{-12}).

    Returns
    -------
    taps : (L,) float64, ``taps @ z[t::-1][:L]`` is (κ * z)(t).
    """
    dt, c1, c2 = _positive("dt", dt), _positive("c1", c1), _positive("c2", c2)
    if c1 < dt:
        raise ValueError(f"c1={c1} must be at least one time step dt={dt} (the read-out's latency)")
    length = c1 + 12.0 / c2 if support is None else _positive("support", support)
    taps = kappa(np.arange(int(np.ceil(length / dt)) + 1) * dt, c1, c2)
    return taps / taps[taps > 0].sum()


def readout_lag(dt, c1, c2):
    """Steps after a jump at which the read-out equals the jump: the last positive tap."""
    return int(np.flatnonzero(kappa_taps(dt, c1, c2) > 0)[-1])


def convolve_kappa(signal, dt, c1, c2):
    """(κ * signal)(t) along time (axis 0), causal, with the normalised κ. (T, n) -> (T, n)."""
    signal = np.asarray(signal, dtype=np.float64)
    return lfilter(kappa_taps(dt, c1, c2), [1.0], signal, axis=0)


def smoothed_derivative(z, dt, c1, c2):
    """Δz(t) = (κ * z)(t) of Eq. 14: z_t - z_{t-Δt} for jumps c1 in the past. (T, n) -> (T, n)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim not in (1, 2):
        raise ValueError(f"z must be a trace (T,) or (T, n), got shape {z.shape}")
    return convolve_kappa(z, dt, c1, c2)


def memory_trace(z, mu, dt, c=1e-3, tau=1.0, scale=1.0, omega0=0.0):
    """The memory variable ω of Eq. 15, integrated exactly for z held over each step.

    With d = (z - μ)/s held during a step of length dt, Eq. 15 is linear in ω:
    ω ← F/λ + (ω - F/λ) e^{-λ dt/τ}, F = d³, λ = tanh(|d|³) + c — stable for any dt.

    Parameters
    ----------
    z : (T, n) or (T,) activity;  mu : scalar, (n,) or (T, n) background μ
    dt : time step;  c : leak c ≥ 0;  tau : time constant τ_ω;  scale : unit s of activity
    omega0 : initial ω (scalar or (n,))

    Returns
    -------
    omega : array of z's shape, ω after each step.
    """
    dt, tau, scale = _positive("dt", dt), _positive("tau", tau), _positive("scale", scale)
    c = float(c)
    if not (np.isfinite(c) and c >= 0):
        raise ValueError(f"c must be a finite number >= 0 (the leak of Eq. 15), got {c!r}")
    z = np.asarray(z, dtype=np.float64)
    d = (z - np.asarray(mu, dtype=np.float64)) / scale
    omega = np.empty_like(d)
    w = np.broadcast_to(np.asarray(omega0, dtype=np.float64), d.shape[1:]).copy()
    for t in range(d.shape[0]):
        w = omega_step(w, d[t], dt / tau, c)
        omega[t] = w
    return omega


def omega_step(omega, d, h, c):
    """ω after a step of length h (in units of τ_ω) with d = (z - μ)/s held (Eq. 15, exact)."""
    lam = np.tanh(np.abs(d) ** 3) + c
    safe = np.where(lam > 0, lam, 1.0)
    gain = np.where(lam > 0, -np.expm1(-lam * h) / safe, h)     # (1 - e^{-λh}) / λ
    return omega * np.exp(-lam * h) + d ** 3 * gain


def memory_readout(omega, dt, c1, c2, c=1e-3, scale=1.0):
    """Δz(t) = s (1 + c)^{1/3} (κ * ω^{1/3})(t) of Eq. 16 (real cube root). (T, n) -> (T, n)."""
    scale = _positive("scale", scale)
    return scale * (1.0 + float(c)) ** (1.0 / 3.0) * convolve_kappa(np.cbrt(omega), dt, c1, c2)


class KappaReadout:
    """(κ * s)(t) computed online: one sample in per ``dt``, the read-out out (Eq. 14 / 16).

    Parameters
    ----------
    n : int
        Number of signals (neurons).
    dt, c1, c2 : float
        As in :func:`kappa_taps`.
    """

    def __init__(self, n, dt, c1, c2):
        self.taps = kappa_taps(dt, c1, c2)
        self._past = np.zeros((len(self.taps), n))            # newest first

    def step(self, s):
        """Push s(t) (n,) and return (κ * s)(t) (n,)."""
        self._past = np.roll(self._past, 1, axis=0)
        self._past[0] = s
        return self.taps @ self._past


class MemoryVariable:
    """The memory variable ω of Eq. 15 stepped online; :meth:`step` returns s (1+c)^{1/3} ω^{1/3}.

    Feed that to a :class:`KappaReadout` for the read-out of Eq. 16.
    """

    def __init__(self, n, dt, c=1e-3, tau=1.0, scale=1.0):
        self.h = _positive("dt", dt) / _positive("tau", tau)
        self.scale = _positive("scale", scale)
        self.c = float(c)
        if not (np.isfinite(self.c) and self.c >= 0):
            raise ValueError(f"c must be a finite number >= 0 (the leak of Eq. 15), got {c!r}")
        self.omega = np.zeros(n)

    def step(self, z, mu):
        """Advance ω by dt with activity z (n,) and background μ; return the memorised deviation (n,)."""
        self.omega = omega_step(self.omega, (np.asarray(z) - mu) / self.scale, self.h, self.c)
        return self.scale * (1.0 + self.c) ** (1.0 / 3.0) * np.cbrt(self.omega)

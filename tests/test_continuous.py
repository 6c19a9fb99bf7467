"""Continuous-time read-outs of z_t - z_{t-Δt} (Section 3.3, Eq. 14-16) on synthetic traces."""
from __future__ import annotations

import numpy as np
import pytest

from threefactor.rule.continuous import kappa, kappa_taps, memory_readout, memory_trace, readout_lag, smoothed_derivative


def _relax(target, tau, dt):
    """Activity that follows a piecewise-constant drive with time constant tau (T, n)."""
    z = np.empty_like(target)
    cur = target[0].copy()
    a = np.exp(-dt / tau)
    for t in range(len(target)):
        cur = target[t] + (cur - target[t]) * a
        z[t] = cur
    return z


def test_kappa_shape_and_normalisation():
    t = np.linspace(-1, 10, 1101)
    k = kappa(t, 3.0, 1.5)
    assert not k[t < 0].any()
    assert (k[(t >= 0) & (t < 3.0)] > 0).all() and (k[t > 3.0] < 0).all()
    dt, c1, c2 = 0.01, 3.0, 1.5
    taps = kappa_taps(dt, c1, c2)
    step = np.cumsum(taps)                               # read-out of a unit step, lag by lag
    lag = readout_lag(dt, c1, c2)
    assert step.argmax() == lag and step[lag] == pytest.approx(1.0, abs=1e-12)
    assert abs(lag * dt - c1) <= dt
    x = c1 * c2                                         # total area: the leak of a constant background
    assert taps.sum() == pytest.approx(-np.exp(-x) * (1 + x) / (1 - np.exp(-x) * (1 + x)), rel=0.02)


def test_smoothed_derivative_reads_out_jumps_of_back_to_back_stimuli():
    """Eq. 14, small fixed Δt: stimuli held 50 time units each, activity relaxing with τ_z = 0.3
    on top of a background μ.  Stated error: |read-out at switch + c1 - (z_t - z_{t-Δt})| < 3% of the
    largest jump, and |read-out| < 1% of it away from the switches."""
    rng = np.random.default_rng(0)
    dt, c1, c2, hold, S, n = 0.05, 20.0, 0.5, 1000, 12, 5
    mu = rng.uniform(0.5, 1.5, n)
    levels = mu + rng.uniform(-3, 3, (S, n))
    z = _relax(np.repeat(levels, hold, axis=0), 0.3, dt)
    dz = smoothed_derivative(z, dt, c1, c2)
    lag = readout_lag(dt, c1, c2)
    onsets = np.arange(1, S) * hold
    jumps = levels[1:] - levels[:-1]
    scale = np.abs(jumps).max()
    assert np.abs(dz[onsets + lag] - jumps).max() < 0.03 * scale
    quiet = np.zeros(len(z), bool)
    quiet[hold:] = True                                  # the trace's own start is a jump from 0
    for o in onsets:
        quiet[o:o + lag + int(9 / c2 / dt)] = False
    assert np.abs(dz[quiet]).max() < 0.01 * scale


def _gapped_trace(rng, dt, n, S, dur, gaps, mu):
    dev = rng.uniform(2, 4, (S, n)) * rng.choice([-1, 1], (S, n))
    parts, onsets, offsets, t = [np.tile(mu, (int(1 / dt), 1))], [], [], int(1 / dt)
    for k in range(S):
        onsets.append(t)
        parts.append(np.tile(mu + dev[k], (dur, 1)))
        parts.append(np.tile(mu, (gaps[k], 1)))
        offsets.append(t + dur)
        t += dur + gaps[k]
    return np.vstack(parts), dev, np.array(onsets), np.array(offsets)


def test_memory_readout_bridges_gaps_of_background_activity():
    """Eq. 15-16, long variable gaps: stimuli of 15 time units (deviations 2-4 units s from μ), gaps
    of 200-300 units at the background μ.  Stated error: the memory read-out at onset + c1 gives
    z_new - z_previous-stimulus within 3% of the largest jump, stays below 2% of it late in the
    gaps (the return to μ at an offset leaves no read-out), while the plain smoothed derivative
    (Eq. 14) misses by > 30% (it reads z_new - μ)."""
    rng = np.random.default_rng(1)
    dt, n, S, c, c1, c2 = 0.1, 5, 10, 1e-4, 100.0, 0.1
    mu = rng.uniform(0.5, 1.5, n)
    target, dev, onsets, offsets = _gapped_trace(rng, dt, n, S, 150, rng.integers(2000, 3000, S), mu)
    z = _relax(target, 0.02, dt)
    omega = memory_trace(z, mu, dt, c=c)
    readout = memory_readout(omega, dt, c1, c2, c=c)
    lag = readout_lag(dt, c1, c2)
    jumps = dev[1:] - dev[:-1]
    scale = np.abs(jumps).max()
    assert np.abs(readout[onsets[1:] + lag] - jumps).max() < 0.03 * scale
    quiet = np.zeros(len(z), bool)                       # late in each gap: the offset left no trace
    for on, nxt in zip(onsets[:-1], onsets[1:]):
        quiet[on + lag + int(95 / dt):nxt] = True
    assert quiet.sum() > 1000 and np.abs(readout[quiet]).max() < 0.02 * scale
    plain = smoothed_derivative(z, dt, c1, c2)
    assert np.abs(plain[onsets[1:] + lag] - jumps).max() > 0.3 * scale
    # the memory holds the last deviation through the gap: ω^{1/3} (1 + c)^{1/3} ≈ d
    held = np.cbrt(omega[onsets[1:] - 1]) * (1 + c) ** (1 / 3)
    np.testing.assert_allclose(held, dev[:-1], rtol=0.01)


def test_memory_trace_steady_state_and_exact_integration():
    """For a held deviation d, ω → d³ / (tanh|d|³ + c), whatever dt (the integrator is exact)."""
    d = np.array([[2.5, -0.7, 0.0]])
    for dt in (0.01, 0.5, 5.0):
        om = memory_trace(np.repeat(d, int(50 / dt), axis=0), 0.0, dt, c=0.01)
        expect = d[0] ** 3 / (np.tanh(np.abs(d[0]) ** 3) + 0.01)
        np.testing.assert_allclose(om[-1], expect, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: kappa_taps(0.1, -1.0, 1.0), "c1 must be"),
    (lambda: kappa_taps(0.0, 1.0, 1.0), "dt must be"),
    (lambda: kappa_taps(0.5, 0.1, 1.0), "c1=0.1 must be at least one time step"),
    (lambda: memory_trace(np.zeros((3, 2)), 0.0, 0.1, c=-1.0), "c must be"),
    (lambda: memory_trace(np.zeros((3, 2)), 0.0, 0.1, scale=0.0), "scale must be"),
    (lambda: smoothed_derivative(np.zeros((2, 2, 2)), 0.1, 1.0, 1.0), "z must be a trace"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_streaming_readouts_equal_the_trace_functions():
    from threefactor.rule.continuous import KappaReadout, MemoryVariable
    rng = np.random.default_rng(2)
    dt, c1, c2, c = 0.1, 2.0, 1.5, 1e-3
    z = np.repeat(rng.normal(0, 3, (12, 3)), 40, axis=0)
    ro, mem = KappaReadout(3, dt, c1, c2), MemoryVariable(3, dt, c=c, tau=0.5, scale=0.7)
    got = np.array([ro.step(zt) for zt in z])
    np.testing.assert_allclose(got, smoothed_derivative(z, dt, c1, c2), atol=1e-12)
    held = np.array([mem.step(zt, 0.2) for zt in z])
    omega = memory_trace(z, 0.2, dt, c=c, tau=0.5, scale=0.7)
    np.testing.assert_allclose(held, 0.7 * (1 + c) ** (1 / 3) * np.cbrt(omega), atol=1e-12)

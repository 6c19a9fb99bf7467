#!/usr/bin/env python
"""The two-point rule in continuous time, as in Fig. 1A/B of Pogodin & Latham (2020).

A small linear layer (8 inputs -> 5 neurons, Eq. 57 with f' = 1) sees a sequence
of stimuli from 3 classes.  Each neuron and each input reads out its own jump
z_t - z_{t-Δt} from its activity (Section 3.3):

A. stimuli back to back (small fixed Δt): Δz = κ * z, the smoothed temporal
   derivative of Eq. 14;
B. stimuli separated by long, variable gaps at the background μ: the memory
   variable ω of Eq. 15 keeps the last deviation from μ through the gap and
   Δz = κ * ω^{1/3} (Eq. 16).

The circuit of App. C.1 turns the read-outs into the third factor
(:mod:`threefactor.rule.online`): b1 = ‖Δz‖², b2 = γ k(y_t, y_{t-Δt}) - 2 e^{-b1/2σ²},
M = -(b2 - b3) e^{-b1/2σ²}/σ², with k(y, y') = 1 or -1/(n-1) given from outside
at each switch's onset (the whole of its read-out bump uses this switch's label)
and b3 a running average of b2 updated once per switch with the b2 of the
read-out's peak (c1 after the switch), once that switch's read-out has died
away: a switch is centred with the average of the switches before it, as in the
discrete rule.  The weights change continuously,
dW/dt = η M(t) Δz(t) Δx(t)ᵀ, which is non-zero only around stimulus switches.
M(t) is computed from the read-out as it rises and falls, so during a switch's
bump it is at first the factor of a smaller jump (b1 small) and may even change
sign: the net change of a switch is close to, not equal to, the discrete
two-point update of :class:`threefactor.nn.online_layer.OnlineLayer` (with seed 0
and 10 stimuli the cosine of the two is at least 0.8 for every switch with a b3,
in both scenarios: tests/test_examples.py).

Usage::

    python examples/online_circuit.py --out online_circuit.png
"""
import argparse

import numpy as np

from threefactor.rule.continuous import KappaReadout, MemoryVariable, readout_lag
from threefactor.rule.online import TwoPointRule, centred_factor, change_b2
from threefactor.rule.rules import Rule

N_IN, N_OUT, N_CLASSES = 8, 5, 3
DT, TAU_X = 0.01, 0.02                # time step and input rise time (fast next to τ_ω: Eq. 15 needs it)
C1, C2 = 4.0, 1.5                     # κ of Eq. 14: read-out latency c1, decay c2
LEAK, TAU_OMEGA, UNIT = 1e-4, 0.2, 0.05   # Eq. 15: leak c, time constant τ_ω, activity unit s
ETA, BETA = 0.05, 0.3


def stimulus_sequence(rng, n, gaps):
    """(onsets, offsets, classes, patterns, T): n stimuli, back to back or with gaps (time steps)."""
    dur = int((10.0 if gaps else 20.0) / DT)
    onsets, offsets, t = [], [], int(5.0 / DT)
    for _ in range(n):
        onsets.append(t)
        offsets.append(t + dur)
        t += dur + (int(rng.uniform(40.0, 80.0) / DT) if gaps else 0)
    classes = rng.integers(0, N_CLASSES, n)
    return np.array(onsets), np.array(offsets), classes, t + int(20.0 / DT)


def simulate(rng, prototypes, background, w0, trule, n_stimuli, gaps):
    """Run the layer and its circuit; returns a dict of traces (T, ...)."""
    onsets, offsets, classes, T = stimulus_sequence(rng, n_stimuli, gaps)
    target = np.tile(background, (T, 1))
    for on, off, k in zip(onsets, offsets, classes):
        target[on:(off if gaps else T)] = prototypes[k] + 0.2 * rng.standard_normal(N_IN)
    w = w0.copy()
    read_z, read_x = KappaReadout(N_OUT, DT, C1, C2), KappaReadout(N_IN, DT, C1, C2)
    mem_z = MemoryVariable(N_OUT, DT, LEAK, TAU_OMEGA, UNIT)
    mem_x = MemoryVariable(N_IN, DT, LEAK, TAU_OMEGA, UNIT)
    lag = readout_lag(DT, C1, C2)
    switches = {on: i for i, on in enumerate(onsets)}
    peaks = {on + lag: i for i, on in enumerate(onsets)}
    ends = {on + lag + int(9.0 / C2 / DT): i for i, on in enumerate(onsets)}   # read-out back near 0
    pending = None
    x = background.copy()
    b3, same = None, np.array([True])
    rec = {k: [] for k in ("x", "z", "mu", "held", "dz", "M", "b3", "w")}
    for t in range(T):
        x = target[t] + (x - target[t]) * np.exp(-DT / TAU_X)
        z, mu = w @ x, w @ background            # linear layer; μ = its response to the background
        if gaps:                                 # Eq. 15-16: memorised deviation, then κ
            held = mem_z.step(z, mu)
            dz, dx = read_z.step(held), read_x.step(mem_x.step(x, background))
        else:                                    # Eq. 14: κ on the activity itself
            held = z - mu
            dz, dx = read_z.step(z), read_x.step(x)
        j = switches.get(t)
        if j is not None and j > 0:              # the label signal arrives with the switch, at its onset:
            same = np.array([classes[j] == classes[j - 1]])   # the whole read-out bump uses this pair's label
        i = peaks.get(t)
        b1, k, b2 = change_b2(trule, dz[None, :], same)
        centre = b2 if b3 is None else b3
        circ = centred_factor(trule, dz[None, :], b1, k, b2, centre)
        if i is not None and i > 0:              # b2 of this switch, read at its peak
            pending = b2
        if ends.get(t, 0) > 0 and pending is not None:   # Eq. 61 once per switch, after its plasticity
            b3 = pending if b3 is None else trule.beta * pending + (1 - trule.beta) * b3
        w += ETA * DT * circ.M[0] * np.outer(dz, dx)          # Eq. 57 in continuous time
        for key, val in (("x", x), ("z", z), ("mu", mu), ("held", held), ("dz", dz), ("M", circ.M[0]),
                         ("b3", np.nan if b3 is None else float(b3[0])), ("w", w.copy())):
            rec[key].append(val)
    out = {k: np.array(v) for k, v in rec.items()}
    out.update(t=np.arange(T) * DT, onsets=onsets * DT, offsets=offsets * DT, classes=classes, lag=lag * DT)
    return out


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(5, 2, figsize=(14, 12), sharex="col")
    colors = plt.cm.tab10(np.arange(10))
    titles = ("A. back to back: Δz = κ * z (Eq. 14)", "B. with gaps: Δz = κ * ω^{1/3} (Eq. 15-16)")
    for col, (run, title) in enumerate(zip(runs, titles)):
        t, ax = run["t"], axes[:, col]
        for on, off, k in zip(run["onsets"], run["offsets"], run["classes"]):
            ax[0].axvspan(on, off if col else on + (off - on), color=colors[k], alpha=0.15, lw=0)
            for a in ax:
                a.axvline(on, color="0.8", lw=0.6, zorder=0)
        ax[0].plot(t, run["x"][:, :3])
        ax[0].set_ylabel("input x_k\n(shade: class)")
        ax[0].set_title(title)
        for n in range(3):
            ax[1].plot(t, run["z"][:, n], color=colors[n])
            ax[1].plot(t, run["mu"][:, n], color=colors[n], ls=":", lw=0.8)
        ax[1].set_ylabel("activity z_n\n(dotted: μ_n)")
        for n in range(3):
            ax[2].plot(t, run["dz"][:, n], color=colors[n])
            if col:
                ax[2].plot(t, run["held"][:, n], color=colors[n], ls="--", lw=0.8)
        ax[2].set_ylabel("Δz_n read-out" + ("\n(dashed: s ω^{1/3})" if col else ""))
        ax[3].plot(t, run["M"], color="k", lw=0.8, label="M(t) (Eq. 62; acts only where Δz Δxᵀ ≠ 0)")
        ax[3].plot(t, run["b3"], color="tab:red", lw=0.8, label="b3 (Eq. 61)")
        ax[3].legend(loc="upper right", fontsize=8)
        ax[3].set_ylabel("third factor")
        dw = run["w"] - run["w"][0]
        ax[4].plot(t, dw.reshape(len(t), -1)[:, :6])
        ax[4].plot(t, np.linalg.norm(dw.reshape(len(t), -1), axis=1), color="k", lw=1.5, label="‖W - W₀‖")
        ax[4].legend(loc="upper left", fontsize=8)
        ax[4].set_ylabel("weight change")
        ax[4].set_xlabel("time (read-out latency c1 = %.0f)" % C1)
    fig.suptitle("Two-point rule in time: plasticity happens at stimulus switches (cf. Fig. 1A/B)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="online_circuit.png", help="PNG to write (default online_circuit.png)")
    ap.add_argument("--stimuli", type=int, default=10, help="stimuli per scenario (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.stimuli < 2:
        raise SystemExit("--stimuli must be >= 2 (plasticity needs a switch)")
    rng = np.random.default_rng(args.seed)
    background = np.full(N_IN, 0.2)
    prototypes = background + 1.5 * rng.standard_normal((N_CLASSES, N_IN))
    w0 = rng.standard_normal((N_OUT, N_IN)) / np.sqrt(N_IN)
    trule = TwoPointRule(Rule(sigma=2.0, gamma=2.0, activation="linear"), n_classes=N_CLASSES, beta=BETA)
    runs = [simulate(np.random.default_rng(args.seed + 1), prototypes, background, w0, trule, args.stimuli, g)
            for g in (False, True)]
    plot(runs, args.out)
    for name, run in zip(("back to back", "with gaps"), runs):
        dw = np.linalg.norm((run["w"] - run["w"][0]).reshape(len(run["t"]), -1), axis=1)
        step = np.abs(np.diff(dw))
        near = np.zeros(len(step), bool)
        for on in run["onsets"]:
            near[int(on / DT):int((on + C1 + 9 / C2) / DT)] = True
        print(f"{name}: ‖W - W0‖ = {dw[-1]:.3f}; {100 * step[near].sum() / max(step.sum(), 1e-30):.1f}% of the "
              f"weight change within c1 + 9/c2 of a stimulus onset")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

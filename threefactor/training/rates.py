"""Rates per sample: ``--streams`` changes the speed of online learning, never what is learned (issue 18).

A step of B streams applies the mean of B two-point updates (Eq. 57 / 63a) with the learning rate η,
so at a fixed η per step an epoch of n samples takes n/B steps of the same size: B = 16 would learn
16 times as fast as B = 256 per sample, and noisier.  With ``rate_rule = "per-sample"`` (config.json;
the default of ``threefactor train --mode online``) the rates given are those of a step of
``RATE_STREAMS`` = 256 streams, the default and the B at which the presets' online rates were tuned,
and a step of B streams uses

    η_B = η · B / 256        (local and output rates: the same drift per sample at any B)
    β_B = 1 - (1 - β)^(B/256)   (a b3 shared by the streams averages over as many samples, Eq. 61)

which is the rule in the limit of small rates (SGD with momentum μ moves W by η/(1-μ) times the mean
gradient per step, i.e. η/((1-μ) B) per sample).  One b3 per stream keeps β as given: it averages a
stream's own pairs, one per step at any B.  ``rate_rule = "per-step"`` applies η and β per step at
any B, as every run before issue 18 did; their config.json lacks ``rate_rule`` and resumes so.
"""
from __future__ import annotations

import numpy as np

#: The rate rules of ``--rate-rule`` (config.json's ``rate_rule``).
RATE_RULES = ("per-sample", "per-step")
#: B at which per-sample rates are the rates per step as given (recorded as ``rate_streams``).
RATE_STREAMS = 256


def rate_scale(cfg) -> float:
    """The factor on the learning rates of a step: B / ``rate_streams`` for an online run whose
    ``rate_rule`` is "per-sample", else 1 (batch runs, per-step rates, configs written before it)."""
    if cfg.get("mode") == "online" and cfg.get("rate_rule") == "per-sample":
        return cfg["streams"] / cfg.get("rate_streams", RATE_STREAMS)
    return 1.0


def step_beta(cfg) -> float:
    """β of a step: 1 - (1 - β)^(B/256) for per-sample rates with a shared b3 (so b3 averages over as
    many samples at any B), else β as given."""
    beta = cfg["beta"]
    if cfg.get("rate_rule") == "per-sample" and cfg.get("shared_b3", True) and beta < 1:
        return float(-np.expm1(np.log1p(-beta) * rate_scale(cfg)))
    return beta

"""The circuit variables of an online layer over time (App. C, Fig. 1): :class:`CircuitRecord`.

Kept by :class:`threefactor.nn.online_layer.OnlineLayer` with ``record=True`` (and importable from there).
"""
from __future__ import annotations

import numpy as np


class CircuitRecord:
    """The circuit variables of every step with a pair, on the host (App. C, Fig. 1).

    Attributes after ``to_dict()``: t (T,) step index; b1, b2, b3, M (T, B);
    group (T, B, c) per-group signals b̃_α = Δv_α (grouped rules; the factor of
    group α is M · b̃_α, Eq. 66); factor (T, B, c) that product.
    """

    FIELDS = ("b1", "b2", "b3", "M")

    def __init__(self):
        self._rows = {name: [] for name in ("t",) + self.FIELDS + ("group",)}

    def __len__(self):
        return len(self._rows["t"])

    def append(self, t, circ, to_numpy):
        """Store the :class:`~threefactor.rule.online.Circuit` of step ``t``."""
        self._rows["t"].append(t)
        for name in self.FIELDS:
            self._rows[name].append(np.array(to_numpy(getattr(circ, name))))
        if circ.group is not None:
            self._rows["group"].append(np.array(to_numpy(circ.group)))

    def to_dict(self):
        """Arrays by name: t (T,), b1 / b2 / b3 / M (T, B), group / factor (T, B, c) if grouped."""
        out = {"t": np.asarray(self._rows["t"], dtype=np.int64)}
        for name in self.FIELDS:
            rows = self._rows[name]
            out[name] = np.stack(rows) if rows else np.zeros((0, 0))
        if self._rows["group"]:
            out["group"] = np.stack(self._rows["group"])
            out["factor"] = out["M"][:, :, None] * out["group"]
        return out

    def plot(self, stream=0, axes=None, path=None):
        """Plot b1, b2 with b3, M and the per-group factors of one stream against t (matplotlib).

        Returns the figure; saves it to ``path`` if given.
        """
        import matplotlib.pyplot as plt
        d = self.to_dict()
        n = 4 if "factor" in d else 3
        if axes is None:
            fig, axes = plt.subplots(n, 1, sharex=True, figsize=(8, 2 * n))
        else:
            fig = axes[0].figure
        t = d["t"]
        axes[0].plot(t, d["b1"][:, stream], label="b1 = ‖Δz‖² (Eq. 59)")
        axes[1].plot(t, d["b2"][:, stream], label="b2 (Eq. 60)")
        axes[1].plot(t, d["b3"][:, stream], label="b3 running mean (Eq. 61)")
        axes[2].plot(t, d["M"][:, stream], label="M (Eq. 62)")
        if "factor" in d:
            axes[3].plot(t, d["factor"][:, stream, :])
            axes[3].set_ylabel("M b̃_α (Eq. 66)")
        for ax in axes[:3]:
            ax.legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("step t")
        if path is not None:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        return fig

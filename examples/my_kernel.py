"""A kernel of your own, in one file: the inverse multiquadric k(a, b) = (1 + ‖a − b‖²/s)^(−1/2).

Use it by path, or by name once this file is imported::

    threefactor check --kernel examples/my_kernel.py:InverseMultiquadric --backend numpy
    threefactor train --kernel examples/my_kernel.py:InverseMultiquadric --lr-local 0.5 --lr-out 5e-3 --groups 32
    python -c "import examples.my_kernel, threefactor as tf; print(tf.Rule(kernel='imq'))"
"""
import threefactor as tf


@tf.register_kernel("imq", aliases=("inverse-multiquadric",))
class InverseMultiquadric(tf.Kernel):
    """k(a, b) = (1 + D/s)^(-1/2) with D = ‖a − b‖²; dK/dD = −K³/(2s), dD/dv_i = 2(v_i − v_j)."""

    def __init__(self, s=25.0):
        self.s = s

    @classmethod
    def from_rule(cls, rule):              # take the rule's σ as the scale: s = σ²
        return cls(rule.sigma ** 2)

    def matrix(self, v, xp):               # (m, d) -> (m, m); +, −, ×, / and powers: complex-step safe
        sq = (v * v).sum(1)
        D = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
        return (1.0 + D / self.s) ** -0.5

    def pullback(self, v, K, C, xp):       # dL/dv (m, d) from C = dL/dK (symmetric)
        B = C * (-(K ** 3) / (2.0 * self.s))
        return 4.0 * (B.sum(1)[:, None] * v - B @ v)

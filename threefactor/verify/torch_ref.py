"""The layer objective in PyTorch, for autograd as an oracle and as a benchmark baseline.

Optional: torch is imported lazily, only when a function here runs (install
it with ``pip install -e ".[autograd]"`` from a checkout).  Nothing in the engine uses
this module; :mod:`threefactor.verify.gradcheck` compares the explicit update with
``-dL/dW`` from :func:`autograd_update`, and the benchmarks time
:func:`objective_torch` + ``backward()`` against the explicit rule.

The objective is the same as :func:`threefactor.verify.naive.objective` (Eq. 9, 34)::

    a = x wᵀ,  z = f(a)                                   (Eq. 1)
    v = z  or  v = u^(1-p) - mean_α u^(1-p)               (Eq. 17-18, contiguous groups)
    K = k(v_i, v_j),  Ky = centred label kernel           (Eq. 24-26, 35-36)
    L = pHSIC(K, K) - γ pHSIC(Ky, K)                      (Eq. 9, 34)

written the way a careful autograd user would: squared distances from one
GEMM, no loop over pairs, device and dtype generic (whatever ``x`` and ``w``
are on).  The cosine kernel uses the same smoothed norm sqrt(‖v‖² + ε²) as
:mod:`threefactor.rule.kernels`, SELU the constants of :mod:`threefactor.rule.activations`.
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.activations import SELU_ALPHA, SELU_SCALE
from threefactor.rule.kernels import kernel_object
from threefactor.rule.rules import Rule
from threefactor.install_hint import install_hint

_MISSING = f"torch is not installed: {install_hint('autograd')}"


def torch_available() -> bool:
    """Whether PyTorch can be imported here."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return torch


def _activation(torch, a, name, slope):
    """z = f(a) (Eq. 1), with f'(0) conventions matching :func:`threefactor.rule.activations.activate`."""
    if name == "linear":
        return a
    pos = a > 0
    if name == "relu":
        return torch.where(pos, a, torch.zeros_like(a))
    if name == "lrelu":
        return torch.where(pos, a, slope * a)
    if name == "selu":
        neg = SELU_SCALE * SELU_ALPHA * (torch.exp(torch.clamp(a, max=0.0)) - 1.0)
        return torch.where(pos, SELU_SCALE * a, neg)
    raise ValueError(f"activation={name!r} is not one of: linear, relu, lrelu, selu")


def _representation(torch, z, rule):
    """v (m, d): z itself, or the centred group statistic of Eq. 17-18."""
    if rule.groups is None:
        return z
    m, n = z.shape
    c = rule.groups
    zg = z.reshape(m, c, n // c)
    zhat = zg - zg.mean(dim=2, keepdim=True)
    u = (rule.delta + (zhat * zhat).sum(dim=2)) / (n // c)
    s = u ** (1.0 - rule.p)
    return s - s.mean(dim=1, keepdim=True)


def _kernel(torch, v, rule):
    """K (m, m) on the representation v (m, d) (Eq. 24-26): the rule's kernel object evaluated
    as ``matrix(v, torch)`` (the built-ins are written against ``xp``; a user kernel must be too)."""
    return kernel_object(rule, checked=False).matrix(v, torch)


def _label_kernel(torch, labels, n_classes, kind, dtype):
    """Centred label kernel (m, m): Eq. 35 (cosine) or Eq. 36 (linear, batch frequencies)."""
    same = labels[:, None] == labels[None, :]
    if kind == "cosine":
        one = torch.ones((), dtype=dtype, device=labels.device)
        return torch.where(same, one, -one / (n_classes - 1))
    freq = torch.bincount(labels, minlength=n_classes).to(dtype) / labels.shape[0]
    pl = freq[labels]
    return same.to(dtype) + (freq * freq).sum() - pl[:, None] - pl[None, :]


def _phsic(A, B):
    return (A * B).mean() - A.mean() * B.mean()


def objective_torch(x, w, labels, n_classes, rule):
    """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9, 34) as a differentiable torch scalar.

    Parameters
    ----------
    x : torch.Tensor (m, n_in)
    w : torch.Tensor (n_out, n_in), same dtype and device as ``x``
    labels : torch.Tensor (m,) of integer class indices (moved to ``x``'s device)
    n_classes : int
    rule : :class:`threefactor.rule.rules.Rule`
        A user kernel object is called as ``matrix(v, torch)``.

    Returns
    -------
    torch.Tensor, 0-d
    """
    torch = _torch()
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a threefactor.Rule, got {type(rule).__name__}")
    labels = torch.as_tensor(labels, device=x.device).long()
    z = _activation(torch, x @ w.T, rule.activation, rule.slope)
    v = _representation(torch, z, rule)
    K = _kernel(torch, v, rule)
    Ky = _label_kernel(torch, labels, int(n_classes), rule.label_kernel, K.dtype)
    return _phsic(K, K) - rule.gamma * _phsic(Ky, K)


def _torch_dtype(torch, dtype, like):
    if dtype is None:
        return torch.float32 if np.asarray(like).dtype == np.float32 else torch.float64
    if isinstance(dtype, torch.dtype):
        return dtype
    return {np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def autograd_update(x, w, labels, n_classes, rule, device="cpu", dtype=None):
    """ΔW = -dL/dW by autograd (``backward()``), as a numpy array (n_out, n_in).

    Parameters
    ----------
    x : array (m, n_in); w : array (n_out, n_in); labels : int array (m,)
    n_classes : int
    rule : :class:`threefactor.rule.rules.Rule`
    device : str or torch.device
    dtype : numpy or torch float dtype, optional
        Default: float32 if ``w`` is float32, else float64.

    Returns
    -------
    numpy.ndarray (n_out, n_in), the dtype computed in.
    """
    torch = _torch()
    tdtype = _torch_dtype(torch, dtype, w)
    xt = torch.as_tensor(np.asarray(x), device=device).to(tdtype)
    wt = torch.as_tensor(np.asarray(w), device=device).to(tdtype).clone().requires_grad_(True)
    lt = torch.as_tensor(np.asarray(labels), device=device).long()
    objective_torch(xt, wt, lt, n_classes, rule).backward()
    return (-wt.grad).detach().cpu().numpy()

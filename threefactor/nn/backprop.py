"""Backpropagation through the paper's MLP, every step written by hand (no autograd).

The network (App. D.1) per hidden layer k is::

    a = x Wᵀ,  z = f(a),  r = ẑ/u^p (grp+div, Eq. 21) or r = z,  h = r ⊙ mask

and ``logits = h_K W_outᵀ + b``, ``loss = mean cross-entropy``.  The backward
pass applies the vector-Jacobian product (VJP) of each step in reverse:

* dropout:     ḡ_r = ḡ_h ⊙ mask
* divisive normalisation (Eq. 17, 21; derivation below): ḡ_z from ḡ_r
* activation:  ḡ_a = ḡ_z ⊙ f'(a)
* batchnorm (if any, :mod:`threefactor.rule.batchnorm`): ḡ_a and dL/dγ, dL/dβ through BN
* linear:      dL/dW = ḡ_aᵀ x,  ḡ_x = ḡ_a W

Divisive normalisation, per sample and group α of g neurons::

    ẑ_n = z_n - mean_n z,   u = (δ + Σ_n ẑ_n²)/g,   r_n = ẑ_n u^(-p)

Forward mode (JVP) for a tangent t = dz::

    dẑ = t - mean t,   du = (2/g) Σ_n ẑ_n dẑ_n,   dr_n = u^(-p) dẑ_n - p u^(-p-1) du ẑ_n

Reverse mode (VJP), its transpose, for a cotangent ḡ = dL/dr (centring is a
symmetric projection and Σ_n ẑ_n = 0)::

    dL/dz_n = u^(-p) (ḡ_n - mean ḡ) - (2p/g) u^(-p-1) (Σ_n' ḡ_n' ẑ_n') ẑ_n

Shapes: x (m, n_in), W (n_out, n_in), z/ẑ/r/ḡ (m, n_out), u (m, c).
"""
from __future__ import annotations

from threefactor.rule import batchnorm


def dropout_vjp(g, mask):
    """dL/dr = dL/dh ⊙ mask (mask already holds 0 or 1/(1-p)); identity without a mask."""
    return g if mask is None else g * mask


def divisive_norm_jvp(t, zhat, u, p):
    """Forward-mode derivative of r = ẑ/u^p (Eq. 21) along a tangent ``t`` = dz, (m, n_out)."""
    m, n = zhat.shape
    c = u.shape[1]
    g = n // c
    T = t.reshape(m, c, g)
    Z = zhat.reshape(m, c, g)
    dzhat = T - T.mean(axis=2, keepdims=True)
    du = (2.0 / g) * (Z * dzhat).sum(axis=2)                       # (m, c)
    up = u ** (-p)
    dr = up[:, :, None] * dzhat - (p * up / u * du)[:, :, None] * Z
    return dr.reshape(m, n)


def divisive_norm_vjp(gr, zhat, u, p):
    """Reverse-mode derivative of r = ẑ/u^p (Eq. 21): dL/dz (m, n_out) from dL/dr (m, n_out)."""
    m, n = zhat.shape
    c = u.shape[1]
    g = n // c
    G = gr.reshape(m, c, g)
    Z = zhat.reshape(m, c, g)
    up = u ** (-p)                                                  # (m, c)
    gz = G - G.mean(axis=2, keepdims=True)
    gz *= up[:, :, None]
    s = (G * Z).sum(axis=2)                                         # Σ_n ḡ_n ẑ_n, (m, c)
    gz -= ((2.0 * p / g) * up / u * s)[:, :, None] * Z
    return gz.reshape(m, n)


def hidden_vjp(layer, cache, g_out, backend, need_input_grad=True):
    """Backward pass of one hidden layer.

    Parameters
    ----------
    layer : threefactor.nn.layers.HiddenLayer
    cache : threefactor.nn.layers.HiddenCache from ``layer.forward(..., keep=True)``
    g_out : (m, n_out) dL/dh, h the layer's output after dropout

    Returns
    -------
    grads : [dL/dW (n_out, n_in)], with batchnorm [dL/dW, dL/dγ, dL/dβ] (``layer.params()`` order)
    g_in : (m, n_in) dL/dx, or None when ``need_input_grad`` is False
    """
    g = dropout_vjp(g_out, cache.mask)
    if layer.divisive:
        g = divisive_norm_vjp(g, cache.zhat, cache.u, layer.rule.p)
    ga, bn_grads = batchnorm.pull_back(layer.bn, cache.bn, g * cache.fp)
    dw = backend.matmul(ga.T, cache.x)
    g_in = backend.matmul(ga, layer.w) if need_input_grad else None
    return [dw] + bn_grads, g_in


def forward_backward(net, x, labels, masks, backend, track=False):
    """Loss and the gradient of every parameter of ``net`` on one batch.

    Parameters
    ----------
    net : threefactor.nn.mlp.MLP
    x : (m, n_in);  labels : (m,) integers
    masks : list of dropout masks (m, n_k) or None, one per hidden layer
    track : fold the batch statistics into batchnorm's running ones (the training step does)

    Returns
    -------
    loss : 0-d array, mean cross-entropy
    correct : 0-d integer array
    hidden_grads : per hidden layer k, the list [dL/dW_k (n_k, n_{k-1})] (+ [dL/dγ, dL/dβ] with batchnorm)
    out_grads : [dL/dW_out (n_classes, n_K), dL/db (n_classes,)]
    """
    h, caches = x, []
    for layer, mask in zip(net.hidden, masks):
        h, cache = layer.forward(h, backend, mask, keep=True)
        caches.append(cache)
        if track:
            layer.track(cache)
    logits = net.output.forward(h, backend)
    loss, dlogits, correct = backend.softmax_cross_entropy(logits, labels)
    out_grads = list(net.output.gradients(dlogits, h, backend))
    g = backend.matmul(dlogits, net.output.w)
    hidden_grads = [None] * len(net.hidden)
    for k in range(len(net.hidden) - 1, -1, -1):
        hidden_grads[k], g = hidden_vjp(net.hidden[k], caches[k], g, backend, need_input_grad=k > 0)
    return loss, correct, hidden_grads, out_grads


def network_loss(net, x, labels, masks, backend):
    """Mean cross-entropy of ``net`` with fixed dropout ``masks`` (the function the gradients differentiate)."""
    h = x
    for layer, mask in zip(net.hidden, masks):
        h = layer.forward(h, backend, mask, train=True)
    loss, _, _ = backend.softmax_cross_entropy(net.output.forward(h, backend), labels)
    return loss

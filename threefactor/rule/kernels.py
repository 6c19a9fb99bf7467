"""Kernel matrices on representations and on labels, with their pull-backs; the kernel registry.

Representation kernels (Eq. 24-26) on v of shape (m, d)::

    linear    k(a, b) = aᵀb                                   (Eq. 24)
    cosine    k(a, b) = aᵀb / (‖a‖_ε ‖b‖_ε)                     (Eq. 25)
    gaussian  k(a, b) = exp(-‖a - b‖² / 2σ²)                   (Eq. 26)

with the smoothed norm ‖a‖_ε = sqrt(‖a‖² + ε²) (ε = ``Rule.cosine_eps``):
an all-zero row is similar to nothing and has a finite gradient.

A *pull-back* maps C = dL/dK (m, m, symmetric) to dL/dv (m, d).  A kernel is a
:class:`Kernel`: ``matrix(v, xp)`` and ``pullback(v, K, C, xp)``, written once against
the array namespace ``xp`` (numpy, cupy, or torch for the autograd oracle).  It is
registered under a name with :func:`register_kernel`, the built-ins the same way::

    @register_kernel("polynomial", aliases=("poly",))
    class Polynomial(Kernel):
        def matrix(self, v, xp): ...
        def pullback(self, v, K, C, xp): ...

and is then a name everywhere (``Rule(kernel="poly")``, ``threefactor train --kernel
poly``); unregistered, a class is named by ``path/to/file.py:Class`` or
``package.module:Class``.  The naive reference (:mod:`threefactor.verify.naive`), the
autograd oracle (:mod:`threefactor.verify.torch_ref`) and ``threefactor check`` use the
kernel object itself, so a new kernel needs no other edit.

Label kernels (Eq. 35-36) compare one-hot labels: centred cosine gives 1 for
equal labels and -1/(n-1) otherwise; centred linear gives
1[y_i = y_j] + Σ_k p_k² - p_{y_i} - p_{y_j} with class frequencies p.
"""
from __future__ import annotations

import numpy as np

from threefactor.names import Vocabulary, is_object_spec, load_object

#: ε of the cosine kernel's smoothed norm ‖v‖_ε = sqrt(‖v‖² + ε²): an all-zero
#: row then has norm ε, similarity 0 to everything and a finite gradient.
COSINE_EPS = 1e-6

#: kernel names (canonical, aliases) -> the registered classes in :data:`KERNEL_CLASSES`
KERNEL_NAMES = Vocabulary("kernel", hint="registered kernels: threefactor.kernel_names(); or path/to/file.py:Class",
                          also="your own kernel as path/to/file.py:Class or package.module:Class")
KERNEL_CLASSES = {}


class Kernel:
    """A kernel on representations v (m, d): what a layer's objective compares (Eq. 24-26).

    Subclass it and write the two methods against the array namespace ``xp`` (``numpy``,
    ``cupy``, or ``torch`` when the autograd oracle evaluates ``matrix``): index with
    ``v[:, None]``, reduce with ``.sum(1)``, use ``xp.exp``, ``xp.sqrt`` and ``@``.  Keep
    ``matrix`` free of ``abs``, ``maximum`` and comparisons to get the complex-step check
    of ``threefactor check``.

    Methods
    -------
    matrix(v, xp) -> (m, m)
        The kernel matrix K_ij = k(v_i, v_j).
    pullback(v, K, C, xp) -> (m, d)
        dL/dv given K = matrix(v) and C = dL/dK (symmetric, m × m), e.g. for
        K = v vᵀ it is 2 C v (Eq. 56).
    pair(a, b, xp) -> scalar
        k(a, b) for one pair (d,), the literal definition the naive reference sums over;
        by default the off-diagonal entry of ``matrix`` on the two rows.
    from_rule(rule) (classmethod)
        The kernel a :class:`~threefactor.Rule` asks for; by default ``cls()``.  Override it
        to take ``rule.sigma`` (as the Gaussian does) or other fields.

    ``name`` and ``aliases`` are set by :func:`register_kernel`.
    """

    name = None
    aliases = ()

    def matrix(self, v, xp=np):
        raise NotImplementedError(f"{type(self).__name__}.matrix(v, xp) is not written")

    def pullback(self, v, K, C, xp=np):
        raise NotImplementedError(f"{type(self).__name__}.pullback(v, K, C, xp) is not written")

    def pair(self, a, b, xp=np):
        return self.matrix(xp.stack([a, b]), xp)[0, 1]

    @classmethod
    def from_rule(cls, rule):
        return cls()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def register_kernel(name, aliases=()):
    """Class decorator: register a :class:`Kernel` under ``name`` (and ``aliases``), case-insensitive.

    Registering a class again under its own name (a module loaded twice) replaces it; a name
    taken by another class is a ValueError.
    """
    def register(cls):
        if not (callable(getattr(cls, "matrix", None)) and callable(getattr(cls, "pullback", None))):
            raise TypeError(f"register_kernel({name!r}): {cls!r} needs matrix(v, xp) and pullback(v, K, C, xp)")
        canonical = str(name).lower()
        old = KERNEL_CLASSES.get(KERNEL_NAMES.get(canonical))
        if old is not None and old.__qualname__ == cls.__qualname__:
            KERNEL_NAMES.remove(KERNEL_NAMES.get(canonical))
        KERNEL_NAMES.add(canonical, tuple(a.lower() for a in aliases))
        KERNEL_CLASSES[canonical] = cls
        cls.name, cls.aliases = canonical, tuple(aliases)
        return cls
    return register


def kernel_names():
    """The registered kernels' canonical names (built-ins first)."""
    return KERNEL_NAMES.names


def is_builtin(cls) -> bool:
    """A kernel class of threefactor itself (trusted: its results are not re-checked)."""
    return getattr(cls, "__module__", "").startswith("threefactor.") if cls is not None else False


def resolve_kernel(kernel, argument="kernel", rule=None):
    """What ``Rule(kernel=...)`` holds: a built-in's canonical name, or a kernel object.

    ``kernel`` is a registered name (any case, any alias), ``path/to/file.py:Class`` /
    ``package.module:Class`` (a class or an object), a :class:`Kernel` class, or an object
    with ``matrix`` and ``pullback``.  A class (a registered non-built-in name gives its class)
    is built by ``from_rule(rule)`` when it has one and ``rule`` is given, else with no
    arguments.  ValueError / TypeError naming ``argument`` otherwise (an unknown name with the
    nearest registered ones).
    """
    if isinstance(kernel, str):
        name = KERNEL_NAMES.get(kernel)
        if name is not None:
            cls = KERNEL_CLASSES[name]
            return name if is_builtin(cls) else _instance(cls, kernel, argument, rule)
        if is_object_spec(kernel):
            return _instance(load_object(kernel, argument), kernel, argument, rule)
        raise KERNEL_NAMES.unknown(kernel, argument)
    if isinstance(kernel, type):
        return _instance(kernel, kernel.__name__, argument, rule)
    if not (callable(getattr(kernel, "matrix", None)) and callable(getattr(kernel, "pullback", None))):
        raise TypeError(f"{argument} must be one of " + ", ".join(kernel_names())
                        + ", path/to/file.py:Class, or an object with matrix(v, xp) and pullback(v, K, C, xp) "
                          "methods, got " + type(kernel).__name__)
    return kernel


def _instance(obj, spec, argument, rule=None):
    if isinstance(obj, type):
        try:
            make = getattr(obj, "from_rule", None) if rule is not None else None
            obj = make(rule) if callable(make) else obj()
        except Exception as exc:
            how = "by from_rule(rule)" if callable(make) else "with no arguments"
            raise ValueError(f"{argument}: {spec} could not be built {how}: "
                             f"{type(exc).__name__}: {exc}") from None
    return resolve_kernel(obj, argument)


def kernel_label(kernel) -> str:
    """A kernel's name in tables: its canonical name, else its registered name or class name."""
    if isinstance(kernel, str):
        return kernel
    return getattr(kernel, "name", None) or type(kernel).__name__


def sq_distances(v, xp=np):
    """Squared distances ‖v_i - v_j‖² (m, m) from one GEMM, clamped at 0 (real v), zero diagonal.

    Works for numpy, cupy and torch arrays (the autograd oracle differentiates it)."""
    sq = (v * v).sum(1)
    d = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
    if not _is_complex(d):
        d = d.clip(0)
    m = d.shape[0]
    if hasattr(d, "masked_fill"):        # torch (the autograd oracle): a device-side mask, no host index
        return d.masked_fill(xp.eye(m, dtype=xp.bool, device=d.device), 0.0)
    d[xp.arange(m), xp.arange(m)] = 0
    return d


def _is_complex(a) -> bool:
    flag = getattr(a.dtype, "is_complex", None)       # torch dtypes
    return flag if isinstance(flag, bool) else a.dtype.kind == "c"


@register_kernel("gaussian", aliases=("gauss", "rbf"))
class Gaussian(Kernel):
    """Gaussian kernel exp(-‖a - b‖²/2σ²) (Eq. 26); pull-back Eq. 41-42."""

    def __init__(self, sigma=5.0):
        self.sigma = float(sigma)

    @classmethod
    def from_rule(cls, rule):
        return cls(rule.sigma)

    def matrix(self, v, xp=np):
        return xp.exp(sq_distances(v, xp) * (-0.5 / self.sigma ** 2))

    def pullback(self, v, K, C, xp=np):
        # dL/dv_i = -(2/σ²) Σ_j C_ij K_ij (v_i - v_j) = -(2/σ²) (L_A v)_i, A = C ⊙ K
        A = C * K
        return (-2.0 / self.sigma ** 2) * (A.sum(axis=1)[:, None] * v - A @ v)

    def pair(self, a, b, xp=np):
        d = a - b
        return xp.exp(-(d * d).sum() / (2 * self.sigma ** 2))


@register_kernel("cosine", aliases=("cossim", "cos"))
class Cosine(Kernel):
    """Cosine similarity aᵀb / (‖a‖_ε ‖b‖_ε) (Eq. 25); pull-back Eq. 49-54."""

    def __init__(self, eps=COSINE_EPS):
        self.eps = float(eps)

    @classmethod
    def from_rule(cls, rule):
        return cls(rule.cosine_eps)

    def _unit(self, v, xp):
        norm = xp.sqrt((v * v).sum(1) + self.eps ** 2)
        return v / norm[:, None], norm

    def matrix(self, v, xp=np):
        e, _ = self._unit(v, xp)
        return e @ e.T

    def pullback(self, v, K, C, xp=np):
        e, norm = self._unit(v, xp)
        ge = 2.0 * (C @ e)                       # dL/de, C symmetric
        radial = (ge * e).sum(axis=1)[:, None]
        return (ge - radial * e) / norm[:, None]

    def pair(self, a, b, xp=np):
        eps2 = self.eps ** 2
        return (a * b).sum() / (xp.sqrt((a * a).sum() + eps2) * xp.sqrt((b * b).sum() + eps2))


@register_kernel("linear")
class Linear(Kernel):
    """Linear kernel aᵀb (Eq. 24); pull-back Eq. 56."""

    def matrix(self, v, xp=np):
        return v @ v.T

    def pullback(self, v, K, C, xp=np):
        return 2.0 * (C @ v)

    def pair(self, a, b, xp=np):
        return (a * b).sum()


class UserKernel:
    """A user's kernel object, its results checked before the engine uses them.

    ``matrix`` must give an (m, m) array and ``pullback`` an (m, d) one, finite; both are
    returned in v's dtype (so float32 in stays float32 out on every backend).  A wrong shape
    would otherwise broadcast silently (numpy) or be read past its end (compiled kernels).
    NaN or Inf from a finite v is an error naming the method (from a non-finite v it is left
    for the caller's input checks to report).  On a GPU the finiteness check reads a flag back
    (user kernels only).
    """

    def __init__(self, kernel):
        self.kernel = kernel

    def _checked(self, method, result, shape, v, xp):
        name = f"{type(self.kernel).__name__}.{method}"
        if not hasattr(result, "shape") or not hasattr(result, "dtype"):
            raise TypeError(f"kernel {name} must return an array of shape {shape}, got {type(result).__name__}")
        if tuple(result.shape) != shape:
            raise ValueError(f"kernel {name} returned shape {tuple(result.shape)}; expected {shape} "
                             f"for v of shape {tuple(v.shape)}")
        if getattr(result.dtype, "kind", "f") not in "biuf":
            raise TypeError(f"kernel {name} must return real numbers, got dtype {result.dtype}")
        result = xp.asarray(result, dtype=v.dtype)
        if not bool(xp.isfinite(result).all()) and bool(xp.isfinite(v).all()):   # else the inputs are to blame,
            raise ValueError(f"kernel {name} returned NaN or Inf (v is finite)")    # which the caller reports
        return result

    def matrix(self, v, xp=np):
        m = v.shape[0]
        return self._checked("matrix", self.kernel.matrix(v, xp), (m, m), v, xp)

    def pullback(self, v, K, C, xp=np):
        return self._checked("pullback", self.kernel.pullback(v, K, C, xp), tuple(v.shape), v, xp)


def kernel_object(rule, checked=True):
    """The kernel object of a :class:`~threefactor.rule.rules.Rule`.

    A built-in name gives its registered class built by ``from_rule`` (σ, ε of the rule); a
    user's object is wrapped in :class:`UserKernel`, which checks what it returns, unless
    ``checked=False`` (the references, which must see complex numbers and torch tensors).
    """
    k = rule.kernel
    if isinstance(k, str):
        return KERNEL_CLASSES[KERNEL_NAMES.resolve(k)].from_rule(rule)
    return UserKernel(k) if checked else k


def label_kernel(labels, n_classes, kind="cosine", dtype=np.float64, xp=np):
    """Centred label kernel (m, m) from integer labels (m,).

    ``kind="cosine"``: Eq. 35, 1 if y_i = y_j else -1/(n-1).
    ``kind="linear"``: Eq. 36 with class frequencies p estimated on the batch.
    """
    same = labels[:, None] == labels[None, :]
    if kind == "cosine":
        off = -1.0 / (n_classes - 1)
        return xp.where(same, xp.asarray(1.0, dtype=dtype), xp.asarray(off, dtype=dtype))
    counts = xp.bincount(labels, minlength=n_classes).astype(dtype)
    freq = counts / labels.shape[0]
    pl = freq[labels]
    return same.astype(dtype) + (freq * freq).sum() - pl[:, None] - pl[None, :]

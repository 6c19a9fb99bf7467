"""The package's architecture, checked by walking its source (AST), and the backend seam, used from outside.

* no import circle among threefactor's modules (module-level and function-level imports alike);
* cupy, cupyx and numba are imported or named (``xp.__name__ == "cupy"``) only under threefactor/backends/,
  and only backends/ compiles kernels; the rest reaches device code through the backend object;
* a backend defined outside the package (a subclass of the numpy backend) registered through
  :func:`threefactor.backends.register_backend`, or found through a (faked) entry point of the group
  ``threefactor.backends``, runs ``MLP.train_step`` and ``threefactor.local_update``.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import threefactor
from threefactor import backends
from threefactor.backends import BackendUnavailable, available_backends, get_backend, register_backend
from threefactor.backends.base import Backend
from threefactor.backends.numpy import NumpyBackend

PACKAGE = Path(threefactor.__file__).parent
DEVICE_MODULES = {"cupy", "cupyx", "numba"}
#: names that compile kernels (Numba decorators, CuPy kernel classes)
KERNEL_COMPILERS = {"njit", "jit", "vectorize", "guvectorize", "cuda", "RawKernel", "RawModule",
                    "ElementwiseKernel", "ReductionKernel"}


def _modules():
    """{module name: (path, AST)} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


MODULES = _modules()


def _imports(name, path, tree):
    """(imported module name, line) of every import in the module, at any depth (functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def _own(module):
    """The package module that ``import module`` executes last (a name inside a module: that module)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


def _graph():
    graph = {}
    for name, (path, tree) in MODULES.items():
        graph[name] = {}
        for imported, line in _imports(name, path, tree):
            target = _own(imported) if imported.startswith("threefactor") else None
            if target and target != name:
                graph[name].setdefault(target, line)
    return graph


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_package_and_its_imports():
    """The checks below can fail: the walk finds the modules and the edges it should."""
    graph = _graph()
    assert len(MODULES) > 50 and "threefactor.backends.base" in MODULES
    assert "threefactor.rule.engine" in graph["threefactor.api"]
    assert "threefactor.backends.numpy" in graph["threefactor.backends"]        # a function-level import
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_circle():
    graph = _graph()
    cycles = _cycles(graph)
    detail = ["; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in comp for b in comp if b in graph[a])
              for comp in cycles]
    assert not cycles, "import circles:\n" + "\n".join(detail)


def _device_names(tree):
    """(line, what) of every import of cupy / cupyx / numba, every importlib call naming them, every
    comparison of a module name with "cupy" / "numba", and every kernel compiler named."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DEVICE_MODULES:
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in DEVICE_MODULES:
                yield node.lineno, f"from {node.module} import ..."
            if node.module.startswith("threefactor.backends"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if any(d in full for d in DEVICE_MODULES):
                        yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Call):
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(s.split(".")[0] in DEVICE_MODULES for s in strings) and "import" in ast.dump(node.func):
                yield node.lineno, "importlib call naming " + ", ".join(strings)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [o.value for o in operands if isinstance(o, ast.Constant) and o.value in DEVICE_MODULES]
            asks = any(isinstance(n, ast.Attribute) and n.attr in ("__name__", "__module__")
                       or isinstance(n, ast.Constant) and n.value in ("__name__", "__module__")
                       for o in operands for n in ast.walk(o))
            if named and asks:
                yield node.lineno, f"module check against {named[0]!r}"
        elif isinstance(node, (ast.Attribute, ast.Name)):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name in KERNEL_COMPILERS and name != "cuda":
                yield node.lineno, f"kernel compiler {name}"


def test_the_device_check_finds_what_it_looks_for():
    src = ("import numba\nfrom cupyx.profiler import benchmark\nfrom threefactor.backends import _conv_cupy\n"
           "if getattr(xp, '__name__', '') == 'cupy': pass\nif type(a).__module__ == 'cupy': pass\n"
           "k = RawKernel('', 'f')\nimportlib.import_module('numba')\nif be.name == 'cupy': pass\n")
    found = [what for _, what in _device_names(ast.parse(src))]
    assert len(found) == 7, found           # be.name == "cupy" asks the backend object, not the module


def test_cupy_and_numba_only_under_backends():
    bad = []
    for name, (path, tree) in MODULES.items():
        if name.startswith("threefactor.backends"):
            continue
        bad += [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for line, what in _device_names(tree)]
    assert not bad, "device code outside threefactor/backends/ (make it a backend method):\n" + "\n".join(bad)


# -- a backend from outside the package ---------------------------------------------------------

class CountingBackend(NumpyBackend):
    """The numpy backend, counting the Hebbian products and SGD steps it is asked for."""

    name = "counting"

    def __init__(self):
        self.calls = {"hebbian": 0, "sgd_step": 0, "softmax_cross_entropy": 0}

    def hebbian(self, post, x):
        self.calls["hebbian"] += 1
        return super().hebbian(post, x)

    def sgd_step(self, w, g, buf, sign, wd, mu, lr):
        self.calls["sgd_step"] += 1
        NumpyBackend.sgd_step(w, g, buf, sign, wd, mu, lr)

    def softmax_cross_entropy(self, logits, labels):
        self.calls["softmax_cross_entropy"] += 1
        return super().softmax_cross_entropy(logits, labels)


@pytest.fixture
def clean_registry():
    """Leave the registry as it was (the built-ins only)."""
    before = dict(backends._FACTORIES)
    yield
    backends._FACTORIES.clear()
    backends._FACTORIES.update(before)
    backends._load.cache_clear()


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 6)), rng.normal(size=(12, 6)) / 3, np.arange(8) % 3


def _train(backend, steps=3):
    from threefactor.nn.mlp import MLP
    from threefactor.rule.rules import Rule
    rng = np.random.default_rng(1)
    net = MLP(6, [12, 12], 3, Rule(groups=3, p=0.5), divisive=True, dropout=0.1, backend=backend,
              dtype=np.float64, rng=rng)
    w0 = {k: np.array(v) for k, v in net.parameters().items()}
    opts = net.make_optimizers(0.5, 0.05)
    x, _, y = _problem(2)
    losses = [float(net.train_step(x, y, opts, rng).loss) for _ in range(steps)]
    return net, w0, losses


def _assert_runs_like_numpy(name):
    be = get_backend(name)
    x, w, y = _problem()
    kw = dict(kernel="gaussian", groups=4, p=0.2, n_classes=3)
    dw = threefactor.local_update(x, w, y, backend=name, **kw)
    assert np.array_equal(dw, threefactor.local_update(x, w, y, backend="numpy", **kw))
    assert np.abs(dw).max() > 0
    net, w0, losses = _train(be)
    ref, _, ref_losses = _train(get_backend("numpy"))
    assert losses == ref_losses                                   # bit for bit the reference's numbers
    for k, v in net.parameters().items():
        assert not np.array_equal(v, w0[k]), k                    # every parameter moved
        assert np.array_equal(v, ref.parameters()[k]), k
    return be


def test_a_registered_backend_runs_train_step_and_local_update(clean_registry):
    register_backend("counting", CountingBackend)
    assert "counting" in available_backends() and "counting" in backends.backend_names()
    be = _assert_runs_like_numpy("counting")
    assert isinstance(be, Backend) and be is get_backend("counting")
    # its primitives did the work: one Hebbian product per local_update and per hidden layer and step
    assert be.calls["hebbian"] == 1 + 2 * 3
    assert be.calls["sgd_step"] == 3 * (2 + 2) and be.calls["softmax_cross_entropy"] == 3
    with pytest.raises(ValueError, match="already registered"):
        register_backend("counting", NumpyBackend)


def test_a_backend_from_an_entry_point(clean_registry, monkeypatch, tmp_path):
    """A distribution naming ``fakebe = fake_threefactor_backend:Backend`` in the entry-point group
    ``threefactor.backends`` is found by name, without an explicit registration."""
    (tmp_path / "fake_threefactor_backend.py").write_text(
        "from threefactor.backends.numpy import NumpyBackend\n\n"
        "class Backend(NumpyBackend):\n    name = 'fakebe'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint("fakebe", "fake_threefactor_backend:Backend", backends.ENTRY_POINT_GROUP),
           importlib.metadata.EntryPoint("brokenbe", "no_such_module_here:Backend", backends.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(backends, "_entry_point_factories", lambda: [(ep.name, ep) for ep in eps])
    be = _assert_runs_like_numpy("fakebe")
    assert type(be).__module__ == "fake_threefactor_backend"
    assert "fakebe" in available_backends() and "brokenbe" not in available_backends()
    with pytest.raises(BackendUnavailable, match="brokenbe.*does not import"):
        get_backend("brokenbe")


def test_the_real_entry_point_lookup_reads_the_group(monkeypatch):
    """:func:`backends._entry_point_factories` asks importlib.metadata for the group by name."""
    asked = []

    def entry_points(**kw):
        asked.append(kw)
        return [importlib.metadata.EntryPoint("x", "m:f", backends.ENTRY_POINT_GROUP)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert [name for name, _ in backends._entry_point_factories()] == ["x"]
    assert asked == [{"group": "threefactor.backends"}]


def test_registry_errors_are_clear(clean_registry, monkeypatch):
    with pytest.raises(ValueError, match=r"nmupy.*numpy"):
        get_backend("nmupy")
    with pytest.raises(TypeError, match="must be callable"):
        register_backend("bad", 3)
    register_backend("notabackend", lambda: object())
    with pytest.raises(TypeError, match="not a threefactor.backends.base.Backend"):
        get_backend("notabackend")
    monkeypatch.setitem(sys.modules, "cupy", None)               # `import cupy` raises ImportError
    backends._load.cache_clear()
    with pytest.raises(BackendUnavailable, match=r'pip install (-e "\.)?\[gpu\]|threefactor\[gpu\]'):
        get_backend("cupy")


def test_every_builtin_backend_implements_the_interface():
    """Backend is abstract (a backend missing a primitive cannot be made) and the built-ins fill it."""
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (Backend,), {"name": "half"})()
    abstract = Backend.__abstractmethods__
    assert {"forward", "hebbian", "softmax_cross_entropy", "sgd_step", "accumulate", "im2col"} <= abstract
    from threefactor.backends.cupy import CupyBackend
    from threefactor.backends.numba import NumbaBackend
    for cls in (NumpyBackend, NumbaBackend, CupyBackend):
        assert not cls.__abstractmethods__, cls
        for method in abstract:
            assert getattr(Backend, method).__doc__, method                 # documented in base.py


def test_the_backend_example_runs():
    """examples/extending_backend.py: the README's "A backend" example."""
    import importlib.util
    path = PACKAGE.parent / "examples" / "extending_backend.py"
    spec = importlib.util.spec_from_file_location("extending_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = module.main()
    assert calls["hebbian"] >= 1 and calls["matmul"] >= calls["hebbian"]
    assert module.main() == calls                    # registering again (replace=True) starts a new count


def test_train_and_check_take_a_registered_backend_by_name(clean_registry, tmp_path, capsys):
    """``threefactor train --backend NAME`` and ``check --backend NAME`` accept a registered backend (the
    CLI reads the registry, entry points included), and an unknown name is answered with the nearest."""
    from threefactor.training.config import resolve_config
    from threefactor.training.train import train

    register_backend("counting", CountingBackend)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(64, 12)).astype(np.float32), rng.integers(0, 3, 64),
            rng.normal(size=(32, 12)).astype(np.float32), rng.integers(0, 3, 32))
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=data[0], y_train=data[1], x_test=data[2], y_test=data[3])
    cfg = resolve_config(dataset=str(npz), backend="counting", epochs=1, hidden=[12], groups=3,
                         batch_size=16, lr_local=0.1, lr_out=0.01, dtype="float64")
    train(cfg, tmp_path / "run", progress=False, log=lambda *a, **k: None)
    assert get_backend("counting").calls["hebbian"] > 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backend"] == "counting"
    with pytest.raises(ValueError, match="did you mean 'counting'"):
        resolve_config(backend="countin")
    from threefactor.cli.main import main
    assert main(["check", "--backend", "counting", "--kernel", "gaussian", "--grouping", "plain",
                 "--activation", "lrelu"]) == 0
    assert "counting" in capsys.readouterr().out

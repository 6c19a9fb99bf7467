"""threefactor: explicit, biologically plausible 3-factor Hebbian learning.

Each hidden layer minimises its own pHSIC objective (Pogodin & Latham 2020,
Eq. 9); every weight change is written out as third factor × post-synaptic
term × pre-synaptic term, with no autograd.

The core contract (``local_update``, ``local_objective``, ``third_factor``,
``layer_output``, ``available_backends``) is imported eagerly; training,
checking, data and the online rule are imported on first use.  Importing the
package first arranges the process's thread pools (:mod:`threefactor.threads`).
"""
import importlib

from threefactor import threads as _threads

_threads.configure()          # thread pools that do not spin against each other: before numpy loads BLAS

from threefactor.api import available_backends, layer_output, local_objective, local_update, third_factor
from threefactor.backends import BackendUnavailable, get_backend, register_backend
from threefactor.rule.kernels import Kernel, kernel_names, register_kernel
from threefactor.rule.rules import Rule
from threefactor import _moved

_moved.install()

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "check_rule": "verify.gradcheck", "check_all": "verify.variants",
    "assert_update_matches": "verify.gradcheck", "GradcheckError": "verify.gradcheck",
    "resolve_config": "training.train",
    "MLP": "nn.mlp", "PRESETS": "training.presets",
    "load_dataset": "data.datasets", "DataError": "data.datasets",
    "TwoPointRule": "rule.online", "OnlineLayer": "nn.online_layer", "CircuitRecord": "nn.online_layer",
    "make_online": "nn.online_layer",
    "register_dataset": "data.registry", "dataset_names": "data.registry",
    "sweep": "training.sweep",
}

__all__ = [
    "available_backends", "layer_output", "local_objective", "local_update", "third_factor",
    "BackendUnavailable", "get_backend", "register_backend", "Rule", "Kernel", "register_kernel", "kernel_names",
    "__version__", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'threefactor' has no attribute {name!r}")

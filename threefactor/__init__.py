"""threefactor: explicit, biologically plausible 3-factor Hebbian learning.

Each hidden layer minimises its own pHSIC objective (Pogodin & Latham 2020,
Eq. 9); every weight change is written out as third factor × post-synaptic
term × pre-synaptic term, with no autograd.

The core contract (``local_update``, ``local_objective``, ``third_factor``,
``layer_output``, ``available_backends``) is imported eagerly; training,
checking, data and the online rule are imported on first use.
"""
import importlib

from .api import available_backends, layer_output, local_objective, local_update, third_factor
from .backends import BackendUnavailable, get_backend
from .rules import Rule

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily)
_LAZY = {
    "check_rule": "check", "check_all": "check", "assert_update_matches": "check",
    "GradcheckError": "check",
    "resolve_config": "train",   # (threefactor.train is the module; train() lives in it)
    "MLP": "networks", "PRESETS": "presets",
    "load_dataset": "data", "DataError": "data",
    "TwoPointRule": "online", "OnlineLayer": "online_layer", "CircuitRecord": "online_layer",
    "make_online": "online_layer",
}

__all__ = [
    "available_backends", "layer_output", "local_objective", "local_update", "third_factor",
    "BackendUnavailable", "get_backend", "Rule", "__version__", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'threefactor' has no attribute {name!r}")

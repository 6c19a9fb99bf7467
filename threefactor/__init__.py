"""threefactor: explicit, biologically plausible 3-factor Hebbian learning.

Each hidden layer minimises its own pHSIC objective (Pogodin & Latham 2020,
Eq. 9); every weight change is written out as third factor × post-synaptic
term × pre-synaptic term, with no autograd.
"""
from .api import available_backends, layer_output, local_objective, local_update, third_factor
from .backends import BackendUnavailable, get_backend
from .rules import Rule

__version__ = "0.1.0"

__all__ = [
    "available_backends", "layer_output", "local_objective", "local_update", "third_factor",
    "BackendUnavailable", "get_backend", "Rule", "__version__",
]

"""Old module paths (before the package was re-housed into subpackages) still import.

``import threefactor.online`` gives the module that now lives at ``threefactor.rule.online``: the same
module object, so attributes set on one are seen through the other.  New code uses the new paths; this
table is the one place the old ones are kept.  ``threefactor.third_factor`` is left out on purpose:
that name is the public function.  ``threefactor.data``, ``threefactor.bench`` and ``threefactor.cli`` are
packages now: ``threefactor.data`` re-exports what the module did, ``threefactor.bench`` forwards its old names.
"""
import importlib
import importlib.abc
import importlib.util
import sys

#: old module name (under threefactor.) -> its home now
MOVED = {
    "rules": "rule.rules", "activations": "rule.activations", "kernels": "rule.kernels",
    "grouping": "rule.grouping", "objective": "rule.objective", "engine": "rule.engine",
    "conv": "rule.conv", "conv_rule": "rule.conv_rule", "online": "rule.online",
    "continuous": "rule.continuous", "batchnorm": "rule.batchnorm",
    "layers": "nn.layers", "networks": "nn.mlp", "conv_layers": "nn.convnet", "online_layer": "nn.online_layer",
    "backprop": "nn.backprop", "dropout": "nn.dropout", "optim": "nn.optim",
    "data_formats": "data.formats", "data_download": "data.download", "augment": "data.augment",
    "train": "training.train", "train_config": "training.config", "epochs": "training.loop", "runs": "training.runs",
    "atomic": "training.atomic", "report": "training.report", "presets": "training.presets",
    "paper_results": "training.paper_results",
    "pairwise": "verify.naive", "torch_ref": "verify.torch_ref", "check": "verify.gradcheck",
    "check_batchnorm": "verify.variants",
    "bench_step": "bench.step", "timing": "bench.timing", "machine": "bench.machine",
    "targets": "bench.targets",
    "check_cli": "cli.check", "bench_cli": "cli.bench",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``threefactor.<old>`` and loads it as the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "threefactor" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(f"threefactor.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        # the import machinery stamped the alias's spec on the module: give it back its own
        module.__spec__ = importlib.util.find_spec(module.__name__)


def install():
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())

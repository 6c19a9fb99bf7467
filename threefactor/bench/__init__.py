"""Benchmarks of update throughput: the suite (:mod:`~threefactor.bench.suite`), the MLP training step
(:mod:`~threefactor.bench.step`), timing, machine description, speed targets and malloc settings.

The names that ``threefactor.bench`` had when it was one module still import from here.
"""


def __getattr__(name):
    import importlib
    suite = importlib.import_module("threefactor.bench.suite")
    try:
        return getattr(suite, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

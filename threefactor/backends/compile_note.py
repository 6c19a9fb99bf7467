"""Saying once that Numba is compiling: the first run on a machine spends seconds doing so.

The Numba kernels are compiled on first use and cached on disk (``cache=True``), so only a first
run (or one after an upgrade) compiles. :func:`compile_note` listens to Numba's ``numba:compile``
event, which fires only for a real compilation (not for a kernel loaded from the cache), and logs
one line the first time it fires; :attr:`CompileNote.seconds` is the time spent compiling.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

#: CPU seconds the first run's compilation took on a 2-core AMD EPYC VM (the default
#: ``threefactor train``, 2026-12-07, cold cache via NUMBA_CACHE_DIR: 6.8 s of CPU; 23 s of wall
#: time while the machine was shared, load 12): the estimate the note gives.
TYPICAL_SECONDS = 7


class CompileNote:
    """A Numba event listener: logs one line when the first compilation starts, sums their time."""

    def __init__(self, log):
        self.log, self.said, self.seconds, self._depth, self._t0 = log, False, 0.0, 0, 0.0

    def on_start(self, event):
        if self._depth == 0:
            self._t0 = time.perf_counter()
            if not self.said:
                self.said = True
                self.log(f"compiling the Numba kernels (first run only, ~{TYPICAL_SECONDS} s on an idle machine; "
                         f"they are cached for later runs) ...")
        self._depth += 1

    def on_end(self, event):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._t0



@contextmanager
def compile_note(log):
    """Within the context, log one line if (and when) Numba starts compiling; yields the
    :class:`CompileNote` (``said``, ``seconds``). Without Numba it does nothing."""
    note = CompileNote(log)
    try:
        from numba.core import event
    except ImportError:
        yield note
        return

    class Listener(event.Listener):
        on_start, on_end = staticmethod(note.on_start), staticmethod(note.on_end)

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        yield note
    finally:
        event.unregister("numba:compile", listener)

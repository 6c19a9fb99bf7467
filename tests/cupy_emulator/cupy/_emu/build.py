"""Compile emulated CUDA C++ with g++ into shared libraries, cached by the hash of what is compiled.

The cache lives in ``$THREEFACTOR_CUPY_EMULATOR_CACHE`` or
``<tempdir>/threefactor-cupy-emulator-<uid>``; a library is written under a
temporary name and renamed into place, so concurrent processes share it safely.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import re
import subprocess
import tempfile

#: The emulation header (it includes emu_fibers.h and emu_args.h next to it).
HEADER = pathlib.Path(__file__).with_name("cuda_emu.h")
CXX = os.environ.get("CXX", "g++")
#: -ffp-contract=off: no fused multiply-add (NVRTC fuses by default; see the README's gaps).
FLAGS = ("-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden",
         "-ffp-contract=off", "-fno-strict-aliasing", "-Wno-attributes")

_loaded = {}


class CompileException(Exception):
    """g++ rejected an emulated kernel (the counterpart of ``cupy.cuda.compiler.CompileException``)."""

    def __init__(self, msg, source, name):
        super().__init__(msg)
        self.source, self.name = source, name

    def dump(self, f):
        lines = self.source.splitlines()
        width = len(str(len(lines)))
        f.write("\n".join(f"{i + 1:>{width}} {line}" for i, line in enumerate(lines)) + "\n")


def cache_dir():
    root = os.environ.get("THREEFACTOR_CUPY_EMULATOR_CACHE") or os.path.join(
        tempfile.gettempdir(), f"threefactor-cupy-emulator-{os.getuid()}")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(text):
    h = hashlib.sha256()
    headers = b"".join(h.read_bytes() for h in sorted(HEADER.parent.glob("*.h")))
    for part in (headers, " ".join((CXX,) + FLAGS).encode(), text.encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:32]


def build(source, name):
    """The loaded library of C++ ``source`` (which includes the emulation header itself).

    ``name`` names the program in error messages.  Raises :class:`CompileException`
    with g++'s diagnostics.
    """
    key = _key(source)
    if key in _loaded:
        return _loaded[key]
    folder = cache_dir()
    so = folder / f"{key}.so"
    if not so.exists():
        cpp = folder / f"{key}.{os.getpid()}.cpp"
        tmp = folder / f"{key}.{os.getpid()}.so.tmp"
        cpp.write_text(source, encoding="utf-8")
        try:
            proc = subprocess.run([CXX, *FLAGS, "-o", str(tmp), str(cpp)], capture_output=True, text=True)
            if proc.returncode != 0:
                log = re.sub(re.escape(str(cpp)), name, proc.stderr)
                raise CompileException(f"g++ could not compile {name} (emulated CUDA):\n{log}", source, name)
            os.replace(tmp, so)
        finally:
            cpp.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
    lib = ctypes.CDLL(str(so))
    _loaded[key] = lib
    return lib


def preamble():
    """The first lines of every emulated program: the header, then the user's code from line 1."""
    return f'#include "{HEADER}"\n'

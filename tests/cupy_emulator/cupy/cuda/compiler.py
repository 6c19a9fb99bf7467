"""Emulated ``cupy.cuda.compiler`` (its error class: g++ rejected an emulated kernel)."""
from __future__ import annotations

from .._emu.build import CompileException  # noqa: F401

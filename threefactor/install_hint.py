"""The pip command that installs one of threefactor's extras, as error messages give it.

From a checkout (the package sits next to its ``setup.cfg``) the command is the editable
``pip install -e ".[gpu]"`` of the README, run in that folder; an installed package gets
``pip install "threefactor[gpu]"``. The brackets are quoted for shells such as zsh.
"""
from __future__ import annotations

from pathlib import Path

#: PyTorch's CPU-only wheels: the default wheel brings about 6 GB of CUDA libraries.
TORCH_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def install_hint(extra: str) -> str:
    """``pip install -e ".[EXTRA]" (in CHECKOUT)`` or ``pip install "threefactor[EXTRA]"``; for
    ``autograd`` also how to get PyTorch's CPU-only build."""
    root = Path(__file__).resolve().parents[1]
    if (root / "setup.cfg").is_file():
        hint = f'pip install -e ".[{extra}]" (in {root})'
    else:
        hint = f'pip install "threefactor[{extra}]"'
    if extra == "autograd":
        hint += f"; for PyTorch's CPU-only build (no ~6 GB of CUDA libraries) first: {TORCH_CPU}"
    return hint

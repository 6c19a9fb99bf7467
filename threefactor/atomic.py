"""Atomic file writes: a result is either the old file or the whole new one, never half.

Checkpoints, metrics, configs and JSON reports all go through :func:`atomic_write`:
the data is written to a temp file in the same folder, flushed and fsynced, then
renamed over the target with :func:`os.replace` (atomic on POSIX and Windows).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a binary temp file next to ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path, doc, indent=1):
    """Write ``doc`` as JSON (no NaN/Inf: they are not JSON) atomically."""
    text = json.dumps(doc, indent=indent, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode()))

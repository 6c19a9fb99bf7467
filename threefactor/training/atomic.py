"""Atomic file writes: a result is either the old file or the whole new one, never half.

Checkpoints, metrics, configs and JSON reports all go through :func:`atomic_write`:
the data is written to a temp file in the same folder, flushed and fsynced, then
renamed over the target with :func:`os.replace` (atomic on POSIX and Windows).
:func:`atomic_create` does the same but never replaces: it claims a name that must
not exist yet (a new run's ``config.json``), race-free between processes.

The files get the mode an ordinary ``open(path, "w")`` would give them
(``0o666 & ~umask``), or keep the mode of the file they replace.

JSON is written strictly (no ``NaN``/``Infinity``, which are not JSON):
:func:`write_json` and :func:`dumps` refuse them, :func:`json_safe` turns them into ``null``.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path


def _umask():
    """The process umask, read without changing it where the system tells it (Linux /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)       # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def umask_mode(base=0o666):
    """The mode ``open``/``mkdir`` would give a new file (``base`` 0o666) or folder (0o777)."""
    return base & ~_umask()


def _new_file_mode(path):
    """Mode for a file written at ``path``: the existing file's, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return umask_mode()


def _write_temp(path, write, mode):
    """``write(fileobj)`` into a new temp file next to ``path`` (flushed, fsynced, ``mode``); its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)      # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a binary temp file next to ``path``, fsync, rename over ``path``.

    The new file keeps the mode of the one it replaces (``0o666 & ~umask`` for a new file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, write, _new_file_mode(path))
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def atomic_create(path, write):
    """Like :func:`atomic_write`, but ``path`` must not exist: FileExistsError if it does.

    Exclusive between processes: the complete temp file is hard-linked to ``path`` (which
    fails if the name is taken); where the file system has no hard links, ``path`` is
    opened with ``O_CREAT | O_EXCL`` and written in place.
    """
    path = Path(path)
    mode = umask_mode()
    tmp = _write_temp(path, write, mode)
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:   # no hard links here (some network or FUSE file systems): claim by O_EXCL
        pass
    finally:
        _unlink(tmp)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, ±Inf; numpy's too) replaced by None (JSON ``null``)."""
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == ()
                                  and obj.dtype.kind == "f"):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(doc, **kwargs):
    """:func:`json.dumps` that refuses NaN/Inf (ValueError) instead of writing invalid JSON."""
    return json.dumps(doc, allow_nan=False, **kwargs)


def write_json(path, doc, indent=1):
    """Write ``doc`` as JSON (no NaN/Inf: they are not JSON; ValueError) atomically."""
    text = dumps(doc, indent=indent)
    atomic_write(path, lambda f: f.write(text.encode()))

"""One vocabulary: canonical names, their aliases, and answers to unknown names.

Every name a user types (a kernel, a rule, a grouping, a dataset, a preset, an activation)
is looked up in a :class:`Vocabulary`: case-insensitive, old spellings accepted as aliases
(``cossim`` is ``cosine``, ``grpdiv`` is ``grp+div``), and an unknown name answered with
the nearest known ones (``did you mean 'gaussian'?``), never with the whole list when it is
long.  :func:`load_object` reads a user's ``path/to/file.py:Name`` or ``package.module:Name``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys

#: at most this many choices are listed in full when no close match is found
_LIST_AT_MOST = 8


def unknown_name(argument, value, choices, hint=None, aliases=(), also=None) -> ValueError:
    """A ValueError naming the argument (None: only the value) and the bad value, with the nearest choices.

    Close matches (difflib, case-insensitive) are offered as "did you mean ...?"; with none,
    a short list of choices is given in full and a long one is not (``hint`` says where to
    find it, e.g. "see threefactor train --help").  ``aliases`` (other accepted spellings ->
    their canonical name) are matched, and answered with the canonical name.  ``also`` names what
    else is accepted besides the names (e.g. a path), added to a list given in full.
    """
    choices = list(dict.fromkeys(map(str, choices)))
    text = str(value)
    aliases = dict(aliases) if isinstance(aliases, dict) else {a: a for a in aliases}
    lower = {str(a).lower(): c for a, c in aliases.items()}
    lower.update({c.lower(): c for c in choices})
    close = difflib.get_close_matches(text.lower(), list(lower), n=3, cutoff=0.6)
    if not close:      # a prefix or a part: 'fmnist-gauss' -> fmnist-gaussian, fmnist-gaussian-grp, ...
        close = [c for c in lower if text.lower() and (c.startswith(text.lower()) or text.lower() in c)][:3]
    said = f"{value!r}" if argument is None else f"{argument}={value!r}"
    message = f"{said} is not known"
    if close:
        shown = list(dict.fromkeys(lower[c] for c in close))
        message += "; did you mean " + " or ".join(repr(c) for c in shown) + "?"
    elif len(choices) <= _LIST_AT_MOST:
        message = f"{said} is not one of: {', '.join(choices)}" + (f"; or {also}" if also else "")
    if hint and not close and len(choices) > _LIST_AT_MOST:
        message += f" ({hint})"
    return ValueError(message)


class Vocabulary:
    """Canonical names with aliases, looked up case-insensitively.

    Parameters
    ----------
    argument : str
        What the names are called in error messages (``kernel``, ``grouping``, ...).
    hint : str, optional
        Where the full list can be found, added to an error about a long list.
    """

    def __init__(self, argument, hint=None, also=None):
        self.argument, self.hint, self.also = argument, hint, also
        self._canonical = {}           # lower-case name -> canonical
        self._order = []               # canonical names in registration order

    def add(self, name, aliases=()):
        """Add ``name`` (its canonical spelling) and its ``aliases``; ValueError on a clash."""
        for text in (name, *aliases):
            key = str(text).lower()
            owner = self._canonical.get(key)
            if owner is not None and owner != name:
                raise ValueError(f"{self.argument} name {text!r} is already taken by {owner!r}")
            self._canonical[key] = name
        if name not in self._order:
            self._order.append(name)
        return name

    def remove(self, name):
        """Forget ``name`` and its aliases."""
        self._canonical = {k: v for k, v in self._canonical.items() if v != name}
        if name in self._order:
            self._order.remove(name)

    @property
    def names(self):
        """The canonical names, in the order they were added."""
        return tuple(self._order)

    def aliases(self, name):
        """The other spellings of canonical ``name`` (lower case)."""
        return tuple(k for k, v in self._canonical.items() if v == name and k != name.lower())

    def get(self, text):
        """The canonical name of ``text`` or None."""
        if not isinstance(text, str):
            return None
        return self._canonical.get(text.strip().lower())

    def __contains__(self, text):
        return self.get(text) is not None

    def unknown(self, text, argument="") -> ValueError:
        """The ValueError for an unknown ``text``: the nearest names (canonical or alias); the
        message starts ``argument='text'`` (``argument`` None: just ``'text'``)."""
        return unknown_name(self.argument if argument == "" else argument, text, self._order, self.hint,
                            aliases=self._canonical, also=self.also)

    def resolve(self, text, argument=""):
        """The canonical name of ``text``; ValueError with the nearest names otherwise."""
        name = self.get(text)
        if name is None:
            raise self.unknown(text, argument)
        return name


def is_object_spec(text) -> bool:
    """Whether ``text`` names a user's object: ``path/to/file.py:Name`` or ``package.module:Name``."""
    if not isinstance(text, str) or ":" not in text:
        return False
    module, _, attr = text.rpartition(":")
    return bool(module) and attr.isidentifier()


def load_object(spec, argument="spec"):
    """The object ``Name`` of ``path/to/file.py:Name`` or ``package.module:Name``.

    A file is executed as a fresh module (its folder is not added to ``sys.path``); a dotted
    module is imported, the current folder searched first.  ValueError naming ``argument``
    when the spec is malformed, the file is missing, the import fails or the name is absent.
    """
    module_name, sep, attr = str(spec).rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ValueError(f"{argument} must be MODULE:NAME (path/to/file.py:Name or package.module:Name), "
                         f"got {spec!r}")
    try:
        module = _import(module_name, argument)
    except ValueError:
        raise
    except SyntaxError as exc:
        raise ValueError(f"{argument}: {exc.filename or module_name} line {exc.lineno}: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        raise ValueError(f"{argument}: no module named {exc.name or module_name!r} "
                         f"(give an importable module or a path ending .py)") from None
    except OSError as exc:
        raise ValueError(f"{argument}: cannot read {module_name!r}: {exc.strerror or exc}") from None
    except Exception as exc:
        raise ValueError(f"{argument}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{argument}: {module_name!r} has no {attr!r}") from None


_FILE_MODULES = {}      # absolute path -> (mtime, module): a file is executed once per version


def _import(module_name, argument):
    if module_name.endswith(".py"):
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise ValueError(f"{argument}: no such file {module_name!r}")
        mtime = os.stat(path).st_mtime_ns
        cached = _FILE_MODULES.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        mspec = importlib.util.spec_from_file_location(
            "threefactor_user_" + os.path.basename(path)[:-3].replace("-", "_"), path)
        if mspec is None:
            raise ValueError(f"{argument}: cannot load {module_name!r}")
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        _FILE_MODULES[path] = (mtime, module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)

"""The ``threefactor`` command (also ``python -m threefactor``).

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` (add its arguments) and ``run(args) -> int``
(the exit status).  Modules are imported only when their command runs.

Bad use of any command is reported the same way: one line
``threefactor COMMAND: error: ...`` on stderr and exit status 2.  Argparse
does this for option types (see :func:`at_least` and :func:`output_file`); a
command's ``run`` raises :class:`UsageError` for what only it can see.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

from threefactor import __version__

#: subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("threefactor.cli.train", "train a network with explicit local rules (default: Fashion-MNIST, Gaussian grp+div)"),
    "check": ("threefactor.cli.check", "prove every rule's update equals -dL/dW (finite differences, complex step, autograd)"),
    "bench": ("threefactor.cli.bench", "measure update throughput against the GEMM floor and autograd"),
    "table": ("threefactor.cli.table", "print a Table 1-style Markdown table from run directories"),
    "sweep": ("threefactor.cli.sweep", "train every run of a TOML spec (axes x seeds) on Dask, resumable"),
}

#: the status of bad use (argparse's)
USAGE = 2

NAMES = ("Names are one vocabulary across commands, case-insensitive: kernels and local rules gaussian, cosine, "
         "linear (old spellings gauss, cossim are aliases; bench's variants gauss, cossim[-grp+div] name the "
         "same kernels); groupings plain, grp, grp+div (grpdiv); an unknown name is answered with the nearest "
         "ones.")


class UsageError(Exception):
    """Bad use of a command: :func:`main` prints ``threefactor COMMAND: error: MESSAGE`` and returns 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each default once: ``(default: X)`` is added, plainly (a list as its items
    separated by spaces), unless the help text already speaks of the default or there is none to show
    (None, False, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, [], ()) or default is argparse.SUPPRESS
                or isinstance(default, bool) or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def at_least(low, kind, what):
    """argparse type: a finite ``kind`` (int or float) >= ``low``, else an error naming ``what``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number >= {low}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number >= {low}, got {text!r}")
        if not value >= low:
            raise argparse.ArgumentTypeError(f"{what} must be >= {low}, got {text!r}")
        return value
    return parse


def named(vocabulary):
    """argparse type: a name of ``vocabulary`` (a :class:`threefactor.names.Vocabulary`), any case or
    alias, as its canonical spelling; an unknown one is answered with the nearest names."""
    def parse(text):
        try:
            return vocabulary.resolve(text, None)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def backend_name(text):
    """argparse type of --backend: a registered backend (entry points included), else the nearest names."""
    from threefactor.backends import backend_names
    from threefactor.names import unknown_name
    names = backend_names()
    if text in names:
        return text
    lower = {n.lower(): n for n in names}
    if text.lower() in lower:
        return lower[text.lower()]
    raise argparse.ArgumentTypeError(str(unknown_name(None, text, names)))


def writable_file_problem(path):
    """Why ``path`` cannot be written as a file (None when it can).

    Missing parent folders are fine (they are created when the file is written);
    the nearest existing one must be a writable folder.
    """
    if os.path.isdir(path):
        return f"{path} is a folder; expected a file path, e.g. {os.path.join(path, 'results.json')}"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot create {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: the folder {parent} is not writable"
    return None


def output_file(text):
    """argparse type: a path a file can be written to (checked before any work is done)."""
    problem = writable_file_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser():
    parser = argparse.ArgumentParser(
        prog="threefactor", allow_abbrev=False,
        description="Explicit, biologically plausible 3-factor Hebbian learning "
                    "(Pogodin & Latham 2020). Every weight change is third factor x "
                    "post-synaptic term x pre-synaptic term, with no autograd.",
        epilog="Run 'threefactor COMMAND --help' for the options of a command. Bad use of a command "
               "exits with status 2.\n" + NAMES)
    parser.add_argument("--version", action="version", version=f"threefactor {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        # allow_abbrev=False: --epoch is an error (naming --epochs), never silently taken for it
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                           allow_abbrev=False)
        p.set_defaults(_module=module)
    return parser, sub


def _unrecognized(parser, unknown):
    """Exit 2 with ``PROG: error: unrecognized arguments: ...`` and the nearest options of ``parser``."""
    import difflib
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    hints = []
    for text in unknown:
        if text.startswith("-"):
            near = difflib.get_close_matches(text.split("=", 1)[0], options, n=2, cutoff=0.75)
            if near:
                hints.append(f"{text.split('=', 1)[0]}: did you mean {' or '.join(near)}?")
    parser.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")
                 + f"; see '{parser.prog} --help'")


INTERRUPTED = 130        # 128 + SIGINT, what a shell reports for Ctrl-C


def main(argv=None) -> int:
    """Run ``threefactor COMMAND ...``; Ctrl-C anywhere (loading, parsing, a command that does not
    handle it itself) prints one line and returns 130, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("threefactor: interrupted", file=sys.stderr)
        return INTERRUPTED


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    # Let the chosen command's module add its own arguments before parsing.
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        module.configure_parser(sub.choices[argv[0]])
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would report these as "threefactor: error: ...": name the command, suggest the nearest
        _unrecognized(sub.choices[args.command] if args.command else parser, unknown)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("threefactor: error: a COMMAND is required", file=sys.stderr)
        return USAGE
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except UsageError as exc:
        print(f"threefactor {args.command}: error: {exc}", file=sys.stderr)
        return USAGE
    except SystemExit as exc:
        # train reports bad use as SystemExit("threefactor train: error: ..."), which Python would
        # print and turn into status 1: print it here and make it 2 like the other commands.
        if isinstance(exc.code, str) and exc.code.startswith(f"threefactor {args.command}: error:"):
            print(exc.code, file=sys.stderr)
            exc.code = USAGE
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

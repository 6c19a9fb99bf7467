"""The ``threefactor`` command (also ``python -m threefactor``).

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` (add its arguments) and ``run(args) -> int``
(the exit status).  Modules are imported only when their command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("threefactor.train", "train a network with explicit local rules (default: Fashion-MNIST, Gaussian grp+div)"),
    "check": ("threefactor.check_cli", "prove every rule's update equals -dL/dW (finite differences, complex step, autograd)"),
    "bench": ("threefactor.bench", "measure update throughput against the GEMM floor and autograd"),
    "table": ("threefactor.report", "print a Table 1-style Markdown table from run directories"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="threefactor",
        description="Explicit, biologically plausible 3-factor Hebbian learning "
                    "(Pogodin & Latham 2020). Every weight change is third factor x "
                    "post-synaptic term x pre-synaptic term, with no autograd.",
        epilog="Run 'threefactor COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
    return parser, sub


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    # Let the chosen command's module add its own arguments before parsing.
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        module.configure_parser(sub.choices[argv[0]])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

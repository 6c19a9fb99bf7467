"""``threefactor table RUN_DIRS...``: the command line of :mod:`threefactor.training.report` (Markdown,
CSV and a figure of runs, grouped by configuration, mean and max - min over seeds)."""
from __future__ import annotations

from pathlib import Path

from threefactor.cli.main import UsageError, at_least, output_file
from threefactor.training.report import METRICS, SWEEP_FILE, csv_table, find_runs, markdown_table, summarize, write_sweep_outputs


def configure_parser(parser):
    parser.epilog = ("Runs that share a cell but differ in a setting besides the seed go to separate rows; "
                     "two runs of one configuration with the same seed are an error. Exit status 2 when no "
                     "run (or no finished epoch) is found, or on bad use.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories (or folders holding them, searched one level down), e.g. runs/*")
    parser.add_argument("--metric", choices=METRICS, default="final",
                        help="test accuracy of the final epoch (the paper's) or of the best epoch")
    parser.add_argument("--digits", type=at_least(0, int, "the number of decimals"), default=1,
                        help="decimals shown")
    parser.add_argument("--paper", action="store_true",
                        help="under each row, the paper's numbers for the same cells (Tables 4-5, 7-8)")
    parser.add_argument("--csv", metavar="FILE", type=output_file, default=None,
                        help="also write the table as CSV (one line per cell, the paper's numbers beside it)")
    parser.add_argument("--figure", metavar="FILE", type=output_file, default=None,
                        help="also write a figure of test accuracy against epoch per cell (PNG: mean over "
                             "seeds, min-max band)")
    return parser


def run(args):
    try:
        cells = summarize(find_runs(args.runs), args.metric)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not cells:
        raise UsageError(f"no finished epoch in the runs under {', '.join(args.runs)} (metrics.jsonl is "
                         "written after each epoch)")
    sweep_dirs = [p for p in args.runs if (Path(p) / SWEEP_FILE).is_file()]
    if len(sweep_dirs) == 1 and len(args.runs) == 1:     # a sweep's folder: its table, CSV and figure
        try:
            text, written = write_sweep_outputs(sweep_dirs[0], args.metric, args.digits)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(text, end="")
        print(f"written: {', '.join(map(str, written))}")
    else:
        print(markdown_table(cells, args.metric, args.digits, args.paper), end="")
    written = []
    if args.csv:
        from threefactor.training.atomic import atomic_write
        text = csv_table(cells)
        atomic_write(args.csv, lambda f: f.write(text.encode()))
        written.append(str(args.csv))
    if args.figure:
        from threefactor.training.cell_curves import plot_cells
        plot_cells(cells, args.figure)
        written.append(str(args.figure))
    if written:
        print(f"written: {', '.join(written)}")
    return 0

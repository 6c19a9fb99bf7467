"""curves.png: epoch ticks that never run together, a title naming mode and backend, the paper's line.

The figure is inspected through its artists (tick labels, lines, legend, title), not its pixels.
"""

import numpy as np
import pytest

from threefactor.training import curves
from threefactor.training.config import resolve_config
from threefactor.training.runs import RunDir
from threefactor.training.train import train
from synthetic_data import write_split


def _records(n, objectives=2):
    return [dict(epoch=e, train_loss=1.0 / e, train_accuracy=60.0 + e / n, test_accuracy=62.0 + e / n,
                 seconds=1.0, samples_per_s=1.0, lr_out=0.1, lr_local=0.1,
                 local_objective=[-0.1 * (k + 1) for k in range(objectives)]) for e in range(1, n + 1)]


def _visible_ticks(ax):
    """(position, label, window extent) of the x tick labels drawn inside the axis limits."""
    lo, hi = ax.get_xlim()
    return [(t.get_loc(), t.label1.get_text(), t.label1.get_window_extent())
            for t in ax.xaxis.get_major_ticks() if lo <= t.get_loc() <= hi and t.label1.get_visible()]


def _paper_lines(fig):
    return [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(curves.PAPER_LABEL)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12, 100])
def test_epoch_ticks_are_whole_epochs_and_never_overlap(n):
    fig = curves.curves_figure(_records(n))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = _visible_ticks(ax)
        assert ticks, f"{n} epochs: no x tick drawn"
        assert all(float(pos).is_integer() and 0 <= pos <= n for pos, _, _ in ticks), [t[:2] for t in ticks]
        assert [label for _, label, _ in ticks] == [str(int(pos)) for pos, _, _ in ticks]
        boxes = sorted((b.x0, b.x1) for _, _, b in ticks)
        assert all(a[1] < b[0] for a, b in zip(boxes, boxes[1:])), f"{n} epochs: tick labels overlap"
    if n == 1:     # the bug: the axis ran 0.95..1.05 with eleven fractional labels run together
        assert [label for _, label, _ in _visible_ticks(fig.axes[0])] == ["1"]


def _cfg(**kw):
    return resolve_config(**{"backend": "numpy", **kw})


@pytest.mark.parametrize("options,value,table", [
    (dict(), 88.8, "Table 1"),                                            # the default run
    (dict(grouping="grp"), 88.6, "Table 4"),                              # no grp column in Table 1
    (dict(dataset="mnist", rule="backprop", grouping="plain"), 98.6, "Table 1"),
    (dict(dataset="cifar10", rule="cossim", arch="vgg", width=2), 91.3, "Table 2"),
    (dict(dataset="cifar10", rule="cossim", arch="vgg", batchnorm=True), 90.1, "Table 7"),
])
def test_the_papers_number_for_the_cell_is_a_dashed_line(options, value, table):
    cfg = _cfg(**options)
    fig = curves.curves_figure(_records(3), cfg)
    (line,) = _paper_lines(fig)
    assert line.get_linestyle() == "--"
    assert np.allclose(line.get_ydata(), value) and table in line.get_label()
    assert f"{value:.1f} %" in line.get_label()
    assert line.get_label() in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    lo, hi = fig.axes[0].get_ylim()
    assert lo < value < hi


@pytest.mark.parametrize("options", [
    dict(dataset="cifar10", rule="gaussian", grouping="grp", arch="vgg", lr_out=1e-3, lr_local=1e-3,
         groups=8),                                                          # the paper gives only "<40"
    dict(dataset="cifar10", arch="small"),                                  # a network the paper did not run
])
def test_no_line_where_the_paper_reports_no_number(options):
    fig = curves.curves_figure(_records(3), _cfg(**options))
    assert _paper_lines(fig) == []
    assert all(ln.get_linestyle() != "--" or ln.get_label().startswith("train") for ln in fig.axes[0].get_lines())


def test_online_runs_are_drawn_against_the_batch_rule_and_say_so():
    cfg = _cfg(mode="online", streams=64)
    fig = curves.curves_figure(_records(2), cfg)
    (line,) = _paper_lines(fig)
    assert "batch rule" in line.get_label() and np.allclose(line.get_ydata(), 88.8)
    assert "online, 64 streams" in fig._suptitle.get_text()


@pytest.mark.parametrize("options,mode,backend", [
    (dict(), "batch 256", "numpy float32"),
    (dict(batch_size=32, dtype="float64"), "batch 32", "numpy float64"),
    (dict(mode="online", streams=1), "online, 1 stream", "numpy float32"),
])
def test_title_names_mode_and_backend(options, mode, backend):
    cfg = _cfg(**options)
    title = curves.curves_figure(_records(1), cfg)._suptitle.get_text()
    assert f" · {mode} · " in title and f" · {backend} · " in title
    assert title.startswith("fmnist gaussian grp+div") and title.endswith("seed 0")
    assert curves.curves_figure(_records(1), cfg, title="mine")._suptitle.get_text() == "mine"


def test_without_a_config_no_title_and_no_line(tmp_path):
    fig = curves.curves_figure(_records(2))
    assert fig._suptitle is None and _paper_lines(fig) == []
    rd = RunDir(tmp_path / "run")
    for r in _records(2):
        rd.append_metrics(r)
    rd.config_path.write_text("not json")          # an unreadable config costs the title, not the plot
    assert rd.plot().is_file()
    fig = curves.curves_figure(_records(2), {"seed": 3, "mode": "online"})   # a partial config: what it says
    assert fig._suptitle.get_text() == "online · seed 3" and _paper_lines(fig) == []




@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "mnist").mkdir()
    for split, n in (("train", 64), ("t10k", 32)):
        write_split(root / "mnist", split, rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)
    return root


@pytest.mark.parametrize("options,mode", [(dict(batch_size=16), "batch 16"),
                                          (dict(mode="online", streams=8), "online, 8 streams")])
def test_a_training_run_plots_its_mode_backend_and_the_papers_cell(data_root, tmp_path, monkeypatch,
                                                                   options, mode):
    drawn = []
    real = curves.curves_figure
    monkeypatch.setattr(curves, "curves_figure", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    cfg = resolve_config(dataset="mnist", hidden=[16], groups=4, epochs=1, data_root=str(data_root),
                         backend="numpy", **options)
    rd = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert (rd.path / "curves.png").is_file() and len(drawn) == 1
    fig = drawn[0]
    assert f"mnist gaussian grp+div · {mode} · numpy float32 · seed 0" == fig._suptitle.get_text()
    (line,) = _paper_lines(fig)
    assert np.allclose(line.get_ydata(), 98.1) and "Table 1" in line.get_label()
    fig.canvas.draw()
    assert [label for _, label, _ in _visible_ticks(fig.axes[0])] == ["1"]

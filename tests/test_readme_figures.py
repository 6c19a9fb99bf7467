"""The README's cheap figures are what their commands give at this commit (benchmarks/readme_figures.py).

When a change moves a seeded result on purpose, ``python benchmarks/readme_figures.py --update`` rewrites
the README's figures in the same commit.  The 100-epoch figure is re-run by hand (``--full``).
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
rf = importlib.util.module_from_spec(_spec)
sys.modules["readme_figures"] = rf
_spec.loader.exec_module(rf)

FMNIST = Path("/usr/share/datasets/fashion-mnist")
UPDATE = "if the change meant it: python benchmarks/readme_figures.py --update"


def _readme():
    return rf.quoted(rf.README.read_text())


def test_every_figure_the_script_checks_is_marked_once_and_every_marker_is_known():
    values = _readme()
    wanted = {k for g in rf.GROUPS for k in g.keys() if k not in g.timing}
    assert wanted <= set(values), f"README lacks markers for {sorted(wanted - set(values))}"
    assert set(values) <= {k for g in rf.GROUPS for k in g.keys()}, "a marker no command measures"
    for key in ("train-default.test-1", "train-default.test-2", "train-100.test"):
        assert 0 < float(values[key]) <= 100, (key, values[key])


def test_markers_are_checked():
    with pytest.raises(ValueError, match="twice"):
        rf.quoted("<!-- figure: a -->1<!-- /figure --> <!-- figure: a -->2<!-- /figure -->")
    with pytest.raises(ValueError, match="closed"):
        rf.quoted("<!-- figure: a -->1 and no end")
    with pytest.raises(KeyError, match="b"):
        rf.rewrite("<!-- figure: a -->1<!-- /figure -->", {"b": "2"})


def test_update_rewrites_only_the_figures_in_place(tmp_path):
    readme = tmp_path / "README.md"
    text = rf.README.read_text()
    readme.write_text(text)
    os.chmod(readme, 0o640)
    rf.update_readme({"train-default.test-2": "12.34", "check.commit": "abc1234"}, readme)
    new = readme.read_text()
    values = rf.quoted(new)
    assert values["train-default.test-2"] == "12.34" and values["check.commit"] == "abc1234"
    assert {k: v for k, v in values.items() if k not in ("train-default.test-2", "check.commit")} == \
        {k: v for k, v in _readme().items() if k not in ("train-default.test-2", "check.commit")}
    assert rf.FIGURE.sub("", new) == rf.FIGURE.sub("", text)              # nothing else changed
    assert readme.stat().st_mode & 0o777 == 0o640                           # atomic_write keeps the mode
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]            # no temp file left


def test_compare_catches_a_moved_figure_and_allows_rounding_on_another_machine():
    readme = {"train-default.test-1": "66.99", "train-default.test-2": "68.82",
              "train-default.commit": "abc", "train-default.machine": "2-core AMD EPYC"}
    same = dict(readme, **{"train-default.commit": "def"})
    assert not rf.failed(rf.compare("train-default", readme, same))
    moved = dict(same, **{"train-default.test-2": "68.83"})
    rows = rf.compare("train-default", readme, moved)
    assert rf.failed(rows) and [r[0] for r in rows if r[3] == "MOVED"] == ["train-default.test-2"]
    elsewhere = dict(moved, **{"train-default.machine": "16-core Intel(R) Xeon(R)"})
    assert not rf.failed(rf.compare("train-default", readme, elsewhere))   # other rounding, same story
    far = dict(elsewhere, **{"train-default.test-1": "40.00"})
    assert rf.failed(rf.compare("train-default", readme, far))             # but not another result
    check = rf.compare("check", {"check.summary": "360 comparisons, 0 failed, 0 skipped"},
                       {"check.summary": "360 comparisons, 1 failed, 0 skipped", "check.machine": "x"})
    assert rf.failed(check)
    assert rf.failed(rf.compare("check", {}, {"check.summary": "1 comparisons, 0 failed, 0 skipped"}))


def _assert_matches(name):
    rows = rf.compare(name, _readme(), rf.measure(name, timeout=1200))
    table = "\n".join(f"{k}: README {have}, now {now} ({status})" for k, have, now, status in rows)
    assert not rf.failed(rows), f"{rf.GROUP[name].command} no longer gives the README's figures:\n{table}\n{UPDATE}"


_FULL_FMNIST = FMNIST.is_dir() or Path(os.environ.get("THREEFACTOR_DATA", "/nonexistent"), "fmnist").is_dir()


@pytest.mark.skipif(not _FULL_FMNIST,
                    reason="the real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_the_default_two_epoch_run_gives_the_readmes_accuracies():
    _assert_matches("train-default")


def test_check_gives_the_readmes_summary():
    pytest.importorskip("torch", reason="the README's check summary is with PyTorch installed (its rows are counted)")
    _assert_matches("check")


def test_machine_names_the_kernels_that_round():
    """Two CPUs of one name can round differently (OpenBLAS's kernels, numpy's SIMD loops): the machine a
    seeded figure was measured on names both, so such a pair is compared as two machines (within the
    tolerance), not digit for digit."""
    here = rf.machine()
    cores_cpu, kernels, simd = here.split(", ")
    assert cores_cpu.split("-core ")[0].isdigit() and kernels.endswith(" BLAS kernels") and simd
    readme = {"train-default.test-1": "66.99", "train-default.test-2": "68.82", "train-default.commit": "abc",
              "train-default.machine": "2-core AMD EPYC, SkylakeX BLAS kernels, AVX-512"}
    zen3 = dict(readme, **{"train-default.test-2": "73.63",
                           "train-default.machine": "2-core AMD EPYC, Haswell BLAS kernels, AVX2"})
    assert not rf.failed(rf.compare("train-default", readme, zen3))
    assert rf.failed(rf.compare("train-default", readme, dict(zen3, **{"train-default.machine":
                                                                       readme["train-default.machine"]})))

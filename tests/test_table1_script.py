"""benchmarks/table1.py takes its columns in the one vocabulary (the README's commands name cossim-grp+div)."""
import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "table1.py"


@pytest.fixture(scope="module")
def table1():
    spec = importlib.util.spec_from_file_location("table1_script", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("text, column", [
    ("cossim-grp+div", ("cosine", "grp+div")), ("cossim-grp", ("cosine", "grp")),
    ("gaussian-grp+div", ("gaussian", "grp+div")), ("Gaussian grp+div", ("gaussian", "grp+div")),
    ("backprop", ("backprop", "plain")), ("last-layer-grp+div", ("last-layer", "grp+div")),
    ("lastlayer-grpdiv", ("last-layer", "grp+div")), ("gauss", ("gaussian", "plain")),
])
def test_columns_in_any_spelling(table1, text, column):
    assert table1.parse_column(text) == column


def test_an_unknown_column_is_named_with_the_nearest(table1, capsys):
    with pytest.raises(ValueError, match=r"column='gaussian-grpp' is not known; did you mean 'gaussian-grp'"):
        table1.parse_column("gaussian-grpp")
    with pytest.raises(ValueError, match="the columns: backprop, backprop-grp\\+div"):
        table1.parse_column("bogus")
    with pytest.raises(SystemExit) as exc:
        table1.main(["--columns", "linear-grp", "--out", "unused"])
    assert exc.value.code == 2 and "column='linear-grp'" in capsys.readouterr().err

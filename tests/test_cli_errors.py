"""The ``threefactor`` command as a whole: --version, no command, help that shows defaults once, one error style."""
import argparse
import re
import subprocess
import sys

import pytest

import threefactor
from threefactor.cli import main as cli


def _parser(command):
    """The parser of ``threefactor COMMAND`` with the command's options added."""
    import importlib

    parser, sub = cli.build_parser()
    importlib.import_module(cli.COMMANDS[command][0]).configure_parser(sub.choices[command])
    return sub.choices[command]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"threefactor {threefactor.__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "usage: threefactor" in err and "check" in err and "a COMMAND is required" in err


@pytest.mark.parametrize("command", ["check", "bench", "table"])
def test_help_explains_every_option_and_shows_each_default_once(command):
    parser = _parser(command)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        text = formatter._expand_help(action)
        name = f"{command} {action.option_strings or action.dest}"
        assert text.count("(default") <= 1, f"{name}: default shown twice: {text}"
        assert "default: None" not in text and "['" not in text and "[]" not in text, f"{name}: {text}"
    assert "(default: numpy numba cupy)" in " ".join(
        formatter._expand_help(a) for a in _parser("bench")._actions if "--backend" in a.option_strings)


def test_help_says_which_rule_names_mean_what(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "gauss is the Gaussian kernel" in out and "check --kernel gaussian / cosine" in out
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    assert "old spellings such as gauss, cossim are aliases" in " ".join(capsys.readouterr().out.split())


def test_train_errors_exit_2_like_the_other_commands(tmp_path, capsys):
    """train's own code reports bad use as SystemExit("threefactor train: error: ..."); the CLI makes it status 2."""
    with pytest.raises(SystemExit, match="give either --out or --resume") as exc:
        cli.main(["train", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("threefactor train: error: give either --out or --resume")


def test_exit_status_from_the_shell(tmp_path):
    """`python -m threefactor`: a usage error is status 2 with one 'threefactor CMD: error:' line, no traceback."""
    for argv, prefix in [(["table", str(tmp_path)], "threefactor table: error: no run found"),
                         (["check", "--m", "0"], "threefactor check: error: argument --m"),
                         (["train", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")],
                          "threefactor train: error: give either --out or --resume")]:
        proc = subprocess.run([sys.executable, "-m", "threefactor", *argv], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert re.search("^" + re.escape(prefix), proc.stderr, re.M), proc.stderr


def test_ctrl_c_outside_a_command_is_one_line_and_status_130(capsys, monkeypatch):
    """Ctrl-C while a command's module loads or its arguments are parsed: no traceback."""
    def interrupted(name, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert cli.main(["bench", "--quick"]) == cli.INTERRUPTED == 130
    assert capsys.readouterr().err == "threefactor: interrupted\n"


def test_check_and_bench_take_names_as_train_does():
    """One vocabulary: check's --grouping / --activation / --label-kernel take any case and the old
    spellings (grpdiv, cossim), and check's and bench's --backend answer an unknown name with the
    nearest ones, like train."""
    args = _parser("check").parse_args(["--grouping", "GRPDIV", "plain", "--activation", "LReLU",
                                        "--label-kernel", "cossim", "--backend", "Numpy"])
    assert args.grouping == ["grp+div", "plain"] and args.activation == ["lrelu"]
    assert args.label_kernel == ["cosine"] and args.backend == ["numpy"]
    for command, argv, expected in (("check", ["--grouping", "grpp"], "did you mean 'grp' or 'grp+div'?"),
                                    ("check", ["--backend", "nump"], "did you mean 'numpy'"),
                                    ("bench", ["--backend", "numbaa"], "did you mean 'numba'")):
        parser = _parser(command)
        messages = []
        parser.error = lambda message: (messages.append(message), (_ for _ in ()).throw(SystemExit(2)))
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert expected in messages[0], messages

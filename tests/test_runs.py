"""Run directories: metrics files, atomic checkpoints, plots and the `threefactor table` command."""
import json
import os
import threading

import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.training import runs
from threefactor.training.report import markdown_table, summarize, find_runs
from threefactor.training.runs import RunDir


def _record(epoch, acc, **kw):
    rec = dict(epoch=epoch, train_loss=1.0 / epoch, train_accuracy=acc - 1, test_accuracy=acc,
               seconds=2.0, samples_per_s=100.0, lr_out=0.01, lr_local=1.0,
               local_objective=[-0.1 * epoch, -0.2], local_objective_1=-0.1 * epoch, local_objective_2=-0.2)
    rec.update(kw)
    return rec


def _state(value):
    params = {"hidden.0.w": np.full((3, 2), value, np.float32), "output.b": np.arange(4, dtype=np.float32)}
    opts = {"hidden.0": {"buffers": [np.full((3, 2), -value, np.float32)], "steps": 5, "lr": 0.5}}
    rng = np.random.default_rng(7)
    return params, opts, {"epoch": int(value), "rng_state": rng.bit_generator.state, "config": {"a": 1}}


def test_checkpoint_roundtrip(tmp_path):
    rd = RunDir(tmp_path / "run")
    params, opts, meta = _state(3)
    rd.save_checkpoint(params, opts, meta)
    p, o, m = rd.load_checkpoint()
    assert np.array_equal(p["hidden.0.w"], params["hidden.0.w"]) and p["hidden.0.w"].dtype == np.float32
    assert np.array_equal(o["hidden.0"]["buffers"][0], opts["hidden.0"]["buffers"][0])
    assert o["hidden.0"]["steps"] == 5 and o["hidden.0"]["lr"] == 0.5
    g = np.random.default_rng()
    g.bit_generator.state = m["rng_state"]
    assert g.random() == np.random.default_rng(7).random()
    assert m["epoch"] == 3 and m["config"] == {"a": 1}


def test_crash_during_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run")
    rd.save_checkpoint(*_state(1))

    def crash(f, arrays):   # write half a file, then die
        f.write(b"PK\x03\x04 partial zip")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(runs, "_write_npz", crash)
    with pytest.raises(KeyboardInterrupt):
        rd.save_checkpoint(*_state(2))
    p, _, m = rd.load_checkpoint()
    assert m["epoch"] == 1 and p["hidden.0.w"][0, 0] == 1
    assert [x.name for x in rd.path.iterdir()] == ["checkpoint.npz"]   # no temp file left behind


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint.npz"):
        rd.load_checkpoint()
    (tmp_path / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        rd.load_checkpoint()


def _strict(line):
    """json.loads that refuses NaN / Infinity (as strict parsers do)."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("damage,match", [
    ("truncate", "truncated or not an .npz"),
    ("empty", "empty file"),
    ("no_rng_state", "lacks rng_state"),
    ("meta_list", "expected an object"),
    ("no_meta", "no 'meta' entry"),
    ("missing_buffer", "entry .* is missing"),
])
def test_damaged_checkpoint_names_the_file_and_the_fault(tmp_path, damage, match):
    rd = RunDir(tmp_path / "run")
    rd.save_checkpoint(*_state(3))
    path = rd.checkpoint_path
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as z:
            arrays = dict(z)
        meta = json.loads(str(arrays["meta"]))
        if damage == "no_rng_state":
            del meta["rng_state"]
        elif damage == "meta_list":
            meta = [1, 2]
        elif damage == "missing_buffer":
            del arrays["opt/hidden.0/0"]
        arrays["meta"] = np.array(json.dumps(meta))
        if damage == "no_meta":
            del arrays["meta"]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with pytest.raises(ValueError, match=match) as exc:
        rd.load_checkpoint()
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("text,match", [
    ("", "empty file"), ("{\n", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
])
def test_bad_config_names_the_file(tmp_path, text, match):
    rd = RunDir(tmp_path)
    rd.config_path.write_text(text)
    with pytest.raises(ValueError, match=match) as exc:
        rd.read_config()
    assert str(rd.config_path) in str(exc.value)


def test_every_json_written_is_strict(tmp_path):
    """Non-finite metrics become null (a diverged epoch); a NaN config or checkpoint meta is refused."""
    rd = RunDir(tmp_path / "run")
    rd.append_metrics(_record(1, 50.0))
    rd.append_metrics(_record(2, 10.0, train_loss=float("nan"), local_objective=[float("inf"), np.float32("nan")],
                              local_objective_1=float("-inf"), diverged=True))
    lines = [_strict(x) for x in rd.metrics_path.read_text().splitlines()]
    assert lines[1]["train_loss"] is None and lines[1]["local_objective"] == [None, None]
    assert lines[1]["local_objective_1"] is None and lines[1]["test_accuracy"] == 10.0
    rd.keep_metrics_upto(2)
    assert [_strict(x)["epoch"] for x in rd.metrics_path.read_text().splitlines()] == [1, 2]
    assert rd.plot(title="diverged").is_file()                    # nulls are gaps, not a crash
    with pytest.raises(ValueError):
        rd.write_config({"lr_out": float("nan")})
    with pytest.raises(ValueError):
        rd.save_checkpoint(*_state(1)[:2], {"epoch": 1, "rng_state": {}, "loss": float("inf")})
    assert not rd.config_path.exists() and not rd.has_checkpoint()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_umask_mode_and_keep_an_existing_one(tmp_path, umask):
    from threefactor.training.atomic import atomic_create, write_json
    old = os.umask(umask)
    try:
        rd = RunDir(tmp_path / "run")
        rd.write_config({"a": 1})
        rd.save_checkpoint(*_state(1))
        rd.append_metrics(_record(1, 50.0))
        rd.plot()
        write_json(tmp_path / "bench.json", {"x": 1})
        atomic_create(tmp_path / "new.json", lambda f: f.write(b"{}"))
        want = 0o666 & ~umask
        for path in (rd.config_path, rd.checkpoint_path, rd.metrics_path, rd.path / "metrics.csv",
                     rd.path / "curves.png", tmp_path / "bench.json", tmp_path / "new.json"):
            assert path.stat().st_mode & 0o777 == want, (path.name, oct(path.stat().st_mode))
        os.chmod(rd.metrics_path, 0o640)
        os.chmod(rd.checkpoint_path, 0o604)
        rd.keep_metrics_upto(1)                                    # what --resume does to metrics.jsonl
        rd.save_checkpoint(*_state(2))
        assert rd.metrics_path.stat().st_mode & 0o777 == 0o640
        assert rd.checkpoint_path.stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_atomic_create_never_replaces(tmp_path):
    from threefactor.training.atomic import atomic_create
    path = tmp_path / "config.json"
    atomic_create(path, lambda f: f.write(b"first"))
    with pytest.raises(FileExistsError):
        atomic_create(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_claiming_a_run_dir(tmp_path):
    cfg = {"a": 1}
    rd, created = runs.claim_run_dir(tmp_path / "new", cfg)
    assert created and json.loads(rd.config_path.read_text()) == cfg
    with pytest.raises(ValueError, match="already holds a run that has not finished an epoch .*still be running"):
        runs.claim_run_dir(tmp_path / "new", cfg)                  # config.json alone (a run in epoch 1)
    (tmp_path / "empty").mkdir()
    assert runs.claim_run_dir(tmp_path / "empty", cfg)[1] is False   # an existing empty folder is fine
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds a run; resume it with --resume"):
        runs.claim_run_dir(tmp_path / "old", cfg)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*afile: exists and is not a directory"):
        runs.claim_run_dir(tmp_path / "afile", cfg)
    with pytest.raises(ValueError, match=r"--out .*afile/sub: has a part that is not a directory"):
        runs.claim_run_dir(tmp_path / "afile" / "sub", cfg)
    assert runs.release_run_dir(rd, created) and not rd.path.exists()


def test_a_failed_claim_gives_its_new_directory_back(tmp_path, monkeypatch):
    """config.json cannot be written (a full disk, a config with NaN): the directory the claim made
    is removed, and the error names the flag; no empty run directory is left to block the next run."""
    def full_disk(self, config):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RunDir, "create_config", full_disk)
    for claim, path in ((runs.claim_new_run_dir, tmp_path / "runs" / "base"), (runs.claim_run_dir, tmp_path / "x")):
        with pytest.raises(ValueError, match=r"--out .*: cannot write config.json there \(No space left"):
            claim(path, {"a": 1})
        assert not path.exists()
    (tmp_path / "kept").mkdir()                         # a folder the user made stays
    with pytest.raises(ValueError, match="cannot write config.json"):
        runs.claim_run_dir(tmp_path / "kept", {"a": 1})
    assert (tmp_path / "kept").is_dir()


def test_runs_started_at_once_never_share_a_directory(tmp_path):
    """Many claims of one name at the same moment: each gets its own directory (base, base-2, ...),
    and of many claims of one explicit directory exactly one wins."""
    base = tmp_path / "runs" / "fmnist-gaussian-grpdiv-s0-20240101-120000"
    got, errors = [], []
    barrier = threading.Barrier(8)

    def default(i):
        barrier.wait()
        got.append(runs.claim_new_run_dir(base, {"i": i})[0].path)

    def explicit(i):
        barrier.wait()
        try:
            got.append(runs.claim_run_dir(tmp_path / "shared", {"i": i})[0].path)
        except ValueError as exc:
            errors.append(str(exc))

    for target in (default, explicit):
        got.clear()
        threads = [threading.Thread(target=target, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if target is default:
            assert sorted(p.name for p in got) == sorted([base.name] + [f"{base.name}-{k}" for k in range(2, 9)])
            assert sorted(json.loads((p / "config.json").read_text())["i"] for p in got) == list(range(8))
        else:
            assert len(got) == 1 and len(errors) == 7 and all("already holds a run" in e for e in errors)


def test_metrics_jsonl_csv_and_plot(tmp_path):
    rd = RunDir(tmp_path / "run")
    for e in (1, 2, 3):
        rd.append_metrics(_record(e, 50 + e))
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3]
    csv_lines = (rd.path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and "local_objective_2" in csv_lines[0]
    assert "local_objective," not in csv_lines[0] + ","          # lists are not CSV columns
    assert len(csv_lines) == 4
    with open(rd.metrics_path, "a") as f:                          # a line cut by a crash
        f.write('{"epoch": 4, "train_lo')
    assert len(rd.read_metrics()) == 3
    rd.keep_metrics_upto(2)
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2]
    assert len((rd.path / "metrics.csv").read_text().splitlines()) == 3
    png = rd.plot(title="demo")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="lacks"):
        rd.append_metrics({"epoch": 5})


def _fake_run(path, dataset, rule, grouping, seed, accs, epochs=None, **extra):
    rd = RunDir(path)
    rd.write_config(dict(dataset=dataset, rule=rule, grouping=grouping, seed=seed,
                         epochs=epochs or len(accs), **extra))
    for e, a in enumerate(accs, 1):
        rd.append_metrics(_record(e, a))
    return rd


def test_table(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "a", "fmnist", "gaussian", "grp+div", 0, [80.0, 88.5])
    _fake_run(tmp_path / "runs" / "b", "fmnist", "gaussian", "grp+div", 1, [81.0, 89.1])
    _fake_run(tmp_path / "runs" / "c", "fmnist", "backprop", "plain", 0, [85.0, 90.2])
    _fake_run(tmp_path / "runs" / "d", "mnist", "backprop", "plain", 0, [97.0], epochs=100)
    assert cli.main(["table", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| dataset | backprop | gaussian grp+div |"
    assert lines[2] == "| MNIST | 97.0 (0.0, n=1)* | — |"
    assert lines[3] == "| fashion-MNIST | 90.2 (0.0, n=1) | 88.8 (0.6, n=2) |"
    assert "final-epoch" in out and "stopped before" in out
    cells = summarize(find_runs([tmp_path / "runs" / "a", tmp_path / "runs" / "b"]), "best")
    assert cells[(("fmnist", ""), "gaussian grp+div")]["values"] == [88.5, 89.1]
    assert "best-epoch" in markdown_table(cells, "best")
    assert cli.main(["table", str(tmp_path / "nowhere")]) == 2
    assert "threefactor table: error: " + str(tmp_path / "nowhere") + ": no such run" in capsys.readouterr().err
    (tmp_path / "runs" / "log.txt").write_text("a log beside the runs")       # what runs/* also matches
    assert cli.main(["table", *map(str, sorted((tmp_path / "runs").iterdir()))]) == 0
    assert capsys.readouterr().out.splitlines()[3] == "| fashion-MNIST | 90.2 (0.0, n=1) | 88.8 (0.6, n=2) |"


def test_table_with_the_papers_numbers(tmp_path, capsys):
    """--paper puts the paper's cells (Tables 4-5; 7-8 for the conv nets) under each row that has them."""
    _fake_run(tmp_path / "runs" / "a", "fmnist", "gaussian", "grp+div", 0, [88.5])
    _fake_run(tmp_path / "runs" / "b", "fmnist", "backprop", "plain", 0, [90.0])
    _fake_run(tmp_path / "runs" / "c", "fmnist", "gaussian", "grp+div", 0, [80.0], mode="online")
    _fake_run(tmp_path / "runs" / "d", "cifar10", "gaussian", "grp+div", 0, [85.0], arch="vgg", width=1)
    _fake_run(tmp_path / "runs" / "e", "cifar10", "gaussian", "grp", 0, [30.0], arch="vgg", width=2)
    assert cli.main(["table", "--paper", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "| dataset | backprop | gaussian grp | gaussian grp+div |"
    assert lines[2:8] == [
        "| fashion-MNIST | 90.0 (0.0, n=1) | — | 88.5 (0.0, n=1) |",
        "| fashion-MNIST, paper | 90.2 (0.2, n=5) | 88.6 (0.6, n=5) | 88.8 (0.2, n=5) |",
        "| fashion-MNIST (online) | — | — | 80.0 (0.0, n=1) |",          # no paper row: the paper has no table
        "| CIFAR10 (vgg) | — | — | 85.0 (0.0, n=1) |",
        "| CIFAR10 (vgg), paper | 91.0 (0.4, n=5) | <40 | 86.2 (0.9, n=5) |",
        "| CIFAR10 (vgg ×2) | — | 30.0 (0.0, n=1) | — |"]
    assert lines[8] == "| CIFAR10 (vgg ×2), paper | 91.9 | <40 | 90.4 |"    # Table 8 gives no spread there
    assert "Tables 4-5" in out
    assert cli.main(["table", str(tmp_path / "runs")]) == 0                   # without --paper: no such rows
    assert ", paper |" not in capsys.readouterr().out


def test_paper_numbers_cover_tables_4_and_7():
    from threefactor.training.paper_results import PAPER, paper_cell
    from threefactor.training.presets import COLUMNS, DATASETS, column_name
    for d in DATASETS:                                      # every MLP cell of Tables 4-5
        for r, g in COLUMNS:
            mean, spread = paper_cell(d, "", column_name(r, g))
            assert 30 < mean < 100 and 0 <= spread < 3
    assert len([k for k in PAPER if k[0] == "cifar10" and k[1]]) == 4 and paper_cell("fmnist", "", "x") is None
    assert paper_cell("fmnist", "", "gaussian grp+div") == (88.8, 0.2)      # the headline cell
    assert paper_cell("cifar10", "vgg ×2", "gaussian grp+div") == (90.4, None)


def test_table_keeps_architectures_and_modes_apart(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "a", "fmnist", "gaussian", "grp+div", 0, [88.0])
    _fake_run(tmp_path / "runs" / "b", "fmnist", "gaussian", "grp+div", 0, [80.0], mode="online")
    _fake_run(tmp_path / "runs" / "c", "fmnist", "gaussian", "grp+div", 0, [70.0], arch="vgg", width=2)
    assert cli.main(["table", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:5] == ["| fashion-MNIST | 88.0 (0.0, n=1) |", "| fashion-MNIST (online) | 80.0 (0.0, n=1) |",
                          "| fashion-MNIST (vgg ×2) | 70.0 (0.0, n=1) |"]


def test_table_bad_use_is_a_one_line_error(tmp_path, capsys):
    """No run, no finished epoch, bad --digits: exit status 2 and one line naming what was wrong."""
    (tmp_path / "data").mkdir()
    assert cli.main(["table", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("threefactor table: error: no run found under") and str(tmp_path / "data") in err
    _fake_run(tmp_path / "runs" / "a", "fmnist", "gaussian", "grp+div", 0, [])
    assert cli.main(["table", str(tmp_path / "runs")]) == 2
    assert "no finished epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["table", "--digits", "-1", str(tmp_path / "runs")])
    assert exc.value.code == 2
    assert "argument --digits: the number of decimals must be >= 0, got '-1'" in capsys.readouterr().err


def test_table_refuses_the_same_seed_twice(tmp_path, capsys):
    """Three runs of one configuration, all seed 0, are not n=3 seeds."""
    for name in "abc":
        _fake_run(tmp_path / "runs" / name, "fmnist", "gaussian", "grp+div", 0, [88.0])
    assert cli.main(["table", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "same seed 0" in err and str(tmp_path / "runs" / "a") in err and str(tmp_path / "runs" / "b") in err
    assert cli.main(["table", str(tmp_path / "runs" / "a")]) == 0            # one of them alone is fine
    # same seed, different backend or data folder: still the same configuration
    _fake_run(tmp_path / "more" / "a", "fmnist", "gaussian", "grp+div", 0, [88.0], backend="numpy")
    _fake_run(tmp_path / "more" / "b", "fmnist", "gaussian", "grp+div", 0, [88.0], backend="numba",
              data_root="/elsewhere")
    assert cli.main(["table", str(tmp_path / "more")]) == 2


def test_table_keeps_configurations_apart(tmp_path, capsys):
    """Runs differing in --hidden, --subset or epochs are not averaged as seeds: rows per configuration."""
    runs = tmp_path / "runs"
    _fake_run(runs / "a", "fmnist", "gaussian", "grp+div", 0, [88.0], hidden=[1024])
    _fake_run(runs / "b", "fmnist", "gaussian", "grp+div", 1, [86.0], hidden=[1024])
    _fake_run(runs / "c", "fmnist", "gaussian", "grp+div", 0, [70.0], hidden=[64])
    _fake_run(runs / "d", "fmnist", "backprop", "plain", 0, [90.0], hidden=[64])
    _fake_run(runs / "e", "mnist", "gaussian", "grp+div", 0, [97.0, 98.0], hidden=[64])
    _fake_run(runs / "f", "mnist", "gaussian", "grp+div", 0, [96.0], hidden=[64], subset=1000)
    assert cli.main(["table", "--paper", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| dataset | backprop | gaussian grp+div |"
    assert lines[2:7] == [
        "| MNIST (epochs=1, subset=1000) | — | 96.0 (0.0, n=1) |",
        "| MNIST (epochs=2, subset=None) | — | 98.0 (0.0, n=1) |",
        "| MNIST, paper | 98.6 (0.2, n=5) | 98.1 (0.2, n=5) |",
        "| fashion-MNIST (hidden=1024) | — | 87.0 (2.0, n=2) |",
        "| fashion-MNIST (hidden=64) | 90.0 (0.0, n=1) | 70.0 (0.0, n=1) |"]
    assert lines[7].startswith("| fashion-MNIST, paper |")
    cells = summarize(find_runs([runs]))
    assert cells[(("fmnist", "hidden=1024"), "gaussian grp+div")]["seeds"] == [0, 1]
    assert cells[(("fmnist", "hidden=64"), "gaussian grp+div")]["runs"] == [str(runs / "c")]

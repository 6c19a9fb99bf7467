"""`threefactor train` when things go wrong: divergence, Ctrl-C, damaged run directories, taken or
impossible --out, and options that make no sense.  Each ends in one clear line, never a traceback."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.training import train as train_module
from threefactor.nn.mlp import MLP
from threefactor.training.runs import RunDir
from threefactor.training.train import TrainingDiverged, TrainingInterrupted, resolve_config, train

from test_train import _config, _quiet, data_root  # noqa: F401  (fixture)


def _strict(line):
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


def _argv(data_root, out, *extra):
    return ["train", "--dataset", "mnist", "--hidden", "32", "32", "--groups", "8", "--batch-size", "32",
            "--data-root", str(data_root), "--backend", "numpy", "--no-progress", "--out", str(out), *extra]


# -- divergence -----------------------------------------------------------------------


def test_divergence_stops_with_a_clear_error(data_root, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "nan"
    argv = [a for a in _argv(data_root, out, "--rule", "backprop", "--grouping", "plain", "--lr-out", "1e3",
                             "--epochs", "3") if a not in ("--groups", "8")]
    assert cli.main(argv) == 1                      # a failed run, not bad use (2)
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert msg.startswith("threefactor train: error: training diverged in epoch 1")
    assert "lower learning rate" in msg and "--lr-out (now 1000)" in msg and "no checkpoint" in msg
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = _strict(lines[0])
    assert rec["train_loss"] is None and rec["diverged"] is True and rec["epoch"] == 1
    assert not RunDir(out).has_checkpoint() and (out / "curves.png").is_file()


def test_divergence_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):  # noqa: F811
    cfg = _config(data_root, "gaussian", "grp+div", epochs=1)
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    good = rd.load_checkpoint()[0]
    real_step = MLP.train_step

    def poisoned(self, x, labels, optimizers, rng):     # something blows up in epoch 2
        stats = real_step(self, x, labels, optimizers, rng)
        self.output.w[0, 0] = np.inf
        return stats

    monkeypatch.setattr(MLP, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 2: NaN or Inf in .*weights output.w.*"
                                               r"last good checkpoint \(epoch 1\) is kept"):
        train(dict(cfg, epochs=3), rd.path, resume=True, progress=False, log=_quiet)
    params, _, meta = rd.load_checkpoint()
    assert meta["epoch"] == 1 and all(np.array_equal(params[k], good[k]) for k in good)
    recs = [_strict(x) for x in rd.metrics_path.read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2] and recs[1]["diverged"] and "diverged" not in recs[0]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_online_divergence_mid_epoch_is_reported_as_divergence(data_root, tmp_path, monkeypatch, backend):  # noqa: F811
    """An online step checks its input on the host and meets the NaN/Inf weights in the middle of an
    epoch: a diverged run (status 1, last good checkpoint kept), not a usage error that removed the run."""
    cfg = _config(data_root, "gaussian", "grp+div", epochs=1, mode="online", streams=32, backend=backend)
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    real_step = MLP.train_step
    steps = []

    def poisoned(self, x, labels, optimizers, rng):     # a hidden weight blows up in epoch 2, step 2
        stats = real_step(self, x, labels, optimizers, rng)
        steps.append(1)
        if len(steps) == 2:
            self.hidden[0].w[0, 0] = np.inf
        return stats

    monkeypatch.setattr(MLP, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 2: NaN or Inf in w during the epoch; "
                                               r"the last good checkpoint \(epoch 1\) is kept"):
        train(dict(cfg, epochs=2), rd.path, resume=True, progress=False, log=_quiet)
    assert len(steps) == 2 and rd.load_checkpoint()[2]["epoch"] == 1 and rd.path.is_dir()


def test_resuming_a_checkpoint_with_nan_weights_is_refused(data_root, tmp_path):  # noqa: F811
    cfg = _config(data_root, "backprop", "plain", epochs=1)
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    with np.load(rd.checkpoint_path) as z:
        arrays = dict(z)
    arrays["param/hidden.0.w"] = arrays["param/hidden.0.w"].copy()
    arrays["param/hidden.0.w"][0, 0] = np.nan
    with open(rd.checkpoint_path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(SystemExit, match="non-finite values .* hidden.0.w") as exc:
        cli.main(["train", "--resume", str(rd.path), "--epochs", "2", "--no-progress"])
    assert str(rd.checkpoint_path) in str(exc.value)


# -- Ctrl-C ---------------------------------------------------------------------------


def _interrupt_in_epoch(monkeypatch, epoch, steps_per_epoch):
    """Make MLP.train_step raise KeyboardInterrupt on the first step of ``epoch``."""
    real_step, calls = MLP.train_step, []

    def step(self, *args):
        calls.append(1)
        if len(calls) == (epoch - 1) * steps_per_epoch + 1:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(MLP, "train_step", step)


def test_ctrl_c_prints_one_line_and_exits_130(data_root, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "intr"
    _interrupt_in_epoch(monkeypatch, 3, steps_per_epoch=10)          # 320 samples, batch 32
    assert cli.main(_argv(data_root, out, "--epochs", "4")) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted during epoch 3; the last finished epoch (2) is saved in {out}; "
                   f"resume with: threefactor train --resume {out}")
    rd = RunDir(out)
    assert rd.load_checkpoint()[2]["epoch"] == 2 and [r["epoch"] for r in rd.read_metrics()] == [1, 2]
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3, 4]


def test_ctrl_c_in_the_first_epoch_leaves_no_half_run(data_root, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "intr"
    _interrupt_in_epoch(monkeypatch, 1, steps_per_epoch=10)
    assert cli.main(_argv(data_root, out, "--epochs", "2")) == 130
    assert "interrupted during epoch 1; no epoch had finished" in capsys.readouterr().err
    assert not out.exists()                                           # the same command can start again
    cfg = _config(data_root, "gaussian", "grp+div", epochs=2)
    monkeypatch.undo()
    _interrupt_in_epoch(monkeypatch, 1, steps_per_epoch=10)
    with pytest.raises(KeyboardInterrupt) as exc:                     # the Python API: still a KeyboardInterrupt
        train(cfg, out, progress=False, log=_quiet)
    assert isinstance(exc.value, TrainingInterrupted) and exc.value.epoch == 1 and exc.value.path is None


# -- damaged run directories on --resume -------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("runs") / "good"
    train(_config(data_root, "gaussian", "grp+div", epochs=2), out, progress=False, log=_quiet)
    return out


def _damage(run, kind):
    ck, cfg = run / "checkpoint.npz", run / "config.json"
    if kind == "truncated checkpoint":
        ck.write_bytes(ck.read_bytes()[:1000])
    elif kind == "empty checkpoint":
        ck.write_bytes(b"")
    elif kind == "empty config":
        cfg.write_text("{}")
    elif kind == "malformed config":
        cfg.write_text("{\n")
    elif kind == "config missing a key":
        doc = json.loads(cfg.read_text())
        del doc["batch_size"]
        cfg.write_text(json.dumps(doc))
    elif kind == "config with a bad value":
        cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), hidden=7)))
    elif kind == "meta without rng_state":
        with np.load(ck) as z:
            arrays = dict(z)
        meta = json.loads(str(arrays["meta"]))
        del meta["rng_state"]
        arrays["meta"] = np.array(json.dumps(meta))
        with open(ck, "wb") as f:
            np.savez(f, **arrays)
    elif kind == "no checkpoint":
        ck.unlink()


@pytest.mark.parametrize("kind,file,match", [
    ("truncated checkpoint", "checkpoint.npz", "truncated or not an .npz"),
    ("empty checkpoint", "checkpoint.npz", "empty file"),
    ("meta without rng_state", "checkpoint.npz", "lacks rng_state"),
    ("no checkpoint", None, "no checkpoint.npz to resume from"),
    ("empty config", "config.json", "lacks the settings dataset"),
    ("config missing a key", "config.json", "lacks the settings batch_size"),
    ("malformed config", "config.json", "not valid JSON"),
    ("config with a bad value", "config.json", "hidden"),
])
def test_resume_of_a_damaged_run_names_the_file(finished_run, tmp_path, kind, file, match):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(run, kind)
    with pytest.raises(SystemExit, match=match) as exc:
        cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    msg = str(exc.value)
    assert msg.startswith("threefactor train: error: ") and "\n" not in msg
    assert str(run / file) in msg if file else str(run) in msg


def test_resume_with_fewer_epochs_is_an_error_and_keeps_the_config(finished_run, capsys):
    before = (finished_run / "config.json").read_bytes()
    with pytest.raises(SystemExit, match="epochs=1 .* fewer than the 2 epochs .* already done"):
        cli.main(["train", "--resume", str(finished_run), "--epochs", "1", "--no-progress"])
    assert (finished_run / "config.json").read_bytes() == before
    assert cli.main(["train", "--resume", str(finished_run), "--no-progress"]) == 0    # as many: nothing to do
    assert "already finished its 2 epochs: nothing to train" in capsys.readouterr().out
    assert (finished_run / "config.json").read_bytes() == before


# -- --out ----------------------------------------------------------------------------


def test_out_that_is_a_file_or_cannot_be_made(data_root, tmp_path):  # noqa: F811
    (tmp_path / "afile").write_text("x")
    for out, match in ((tmp_path / "afile", "exists and is not a directory"),
                       (tmp_path / "afile" / "run", "has a part that is not a directory")):
        with pytest.raises(SystemExit, match=match) as exc:
            cli.main(_argv(data_root, out, "--epochs", "1"))
        assert f"--out {out}" in str(exc.value)
    if os.getuid() != 0:                                # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit, match="--out .*cannot create the run directory"):
            cli.main(_argv(data_root, locked / "run", "--epochs", "1"))


def test_out_holding_a_run_in_its_first_epoch_is_taken(data_root, tmp_path):  # noqa: F811
    out = tmp_path / "busy"
    out.mkdir()
    (out / "config.json").write_text("{}")      # another run that has not finished an epoch yet
    with pytest.raises(SystemExit, match="already holds a run"):
        cli.main(_argv(data_root, out, "--epochs", "1"))
    assert (out / "config.json").read_text() == "{}" and sorted(os.listdir(out)) == ["config.json"]


def test_default_out_is_claimed_once(data_root, tmp_path, monkeypatch):  # noqa: F811
    """Two runs whose default directories have the same name (same preset, seed and second)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "default_out", lambda cfg: Path("runs") / "same-name")
    a = train(_config(data_root, "gaussian", "grp+div", epochs=1), progress=False, log=_quiet)
    b = train(_config(data_root, "gaussian", "grp+div", epochs=1, lr_local=0.5), progress=False, log=_quiet)
    assert (a.path.name, b.path.name) == ("same-name", "same-name-2")
    assert len(a.read_metrics()) == len(b.read_metrics()) == 1
    assert (a.read_config()["lr_local"], b.read_config()["lr_local"]) == (1.0, 0.5)


# -- options that make no sense -----------------------------------------------------------


@pytest.mark.parametrize("argv,expected", [
    (["--milestones", "-1"], "milestones must be epochs >= 1"),
    (["--milestones", "0"], "milestones must be epochs >= 1"),
    (["--milestones", "5", "5"], "milestones must be strictly increasing"),
    (["--milestones", "5", "3"], "milestones must be strictly increasing"),
    (["--beta", "0.5"], "beta needs mode='online' .*--beta"),
    (["--per-stream-b3"], "shared_b3 needs mode='online' .*--per-stream-b3"),
    (["--mode", "online", "--streams", "0"], "streams must be a positive integer"),
    (["--data-root", "/etc/passwd"], "--data-root.*'/etc/passwd' is a file"),
])
def test_nonsense_options_are_refused(argv, expected):
    with pytest.raises(SystemExit, match=expected) as exc:
        cli.main(["train", "--no-progress", *argv])
    assert "\n" not in str(exc.value)


def test_subset_larger_than_the_training_set(data_root, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"subset=1000 \(--subset\) is more than the 320 samples"):
        cli.main(_argv(data_root, out, "--subset", "1000", "--epochs", "1"))
    assert not out.exists()
    cfg = resolve_config(dataset="mnist", hidden=[32], groups=8, subset=320, data_root=str(data_root),
                         backend="numpy", epochs=1)
    assert len(train(cfg, out, progress=False, log=_quiet).read_metrics()) == 1   # all of it is fine


# -- progress bars ----------------------------------------------------------------------


def test_no_progress_bar_when_stderr_is_not_a_terminal(data_root, tmp_path, capsys):  # noqa: F811
    train(_config(data_root, "gaussian", "grp+div", epochs=1), tmp_path / "run", progress=True, log=_quiet)
    assert "\r" not in capsys.readouterr().err

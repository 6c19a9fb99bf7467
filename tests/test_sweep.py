"""``threefactor sweep``: specs validated before anything trains, runs on Dask equal to ``threefactor train``,
a killed worker or an interrupted sweep loses nothing, a finished sweep trains nothing again."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
threadpoolctl = pytest.importorskip("threadpoolctl")

from threefactor.cli import main as cli  # noqa: E402
from threefactor.training.runs import RunDir  # noqa: E402
from threefactor.training.sweep import SpecError, _take_lock, plan, sweep  # noqa: E402
from threefactor.training.sweep_cluster import gpu_workers, task_resources  # noqa: E402
from threefactor.training.sweep_spec import expand, read_spec, resolve  # noqa: E402
from synthetic_data import write_split

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "samples_per_s", "cpu_seconds")




@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Synthetic 10-class 'mnist' (noisy binary prototypes), 600 training and 100 test images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    protos = rng.random((10, 28, 28)) < 0.3
    (root / "mnist").mkdir()
    for split, n in (("train", 600), ("t10k", 100)):
        y = rng.permutation(np.arange(n) % 10)
        x = (protos[y] ^ (rng.random((n, 28, 28)) < 0.15)) * 200 + rng.integers(0, 50, (n, 28, 28))
        write_split(root / "mnist", split, x, y)
    return root


def _spec(data_root, epochs=2, seeds=(0, 1), **base):
    return {"seeds": list(seeds),
            "base": {"dataset": "mnist", "data-root": str(data_root), "epochs": epochs, "hidden": [32, 32],
                     "batch_size": 32, "lr-out": 0.05, "backend": "numpy", **base},
            "axes": {"column": [{"rule": "backprop", "grouping": "plain"},
                                {"rule": "gaussian", "grouping": "grp+div", "groups": 8}]}}


def _toml(spec):
    """A spec dict as TOML text (the few shapes these tests use)."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)
    lines = [f"seeds = {value(spec['seeds'])}", "[base]"]
    lines += [f"{k} = {value(v)}" for k, v in spec["base"].items()]
    lines += ["[axes]"] + [f"{k} = {value(v)}" for k, v in spec["axes"].items()]
    return "\n".join(lines) + "\n"


def _results(path):
    """A run's metrics without timings and its checkpoint's arrays."""
    rd = RunDir(path)
    metrics = [{k: v for k, v in r.items() if k not in TIMING} for r in rd.read_metrics()]
    params, states, meta = rd.load_checkpoint()
    return metrics, params, states, meta["epoch"]


def _assert_same_run(a, b):
    ma, pa, sa, ea = _results(a)
    mb, pb, sb, eb = _results(b)
    assert ma == mb and ea == eb
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    for layer in sa:
        assert all(np.array_equal(x, y) for x, y in zip(sa[layer]["buffers"], sb[layer]["buffers"]))


def _quiet(*_):
    pass


# -- the spec, without Dask ----------------------------------------------------

def test_axes_multiply_out_and_names_are_stable(data_root):
    spec = _spec(data_root, seeds=(0, 3))
    spec["axes"]["lr-local"] = [0.5, 1.0]
    runs = resolve(expand(read_spec(spec)))
    assert len(runs) == 2 * 2 * 2
    assert [r.name for r in runs] == [r.name for r in expand(read_spec(spec))]   # same spec, same dirs
    assert len({r.name for r in runs}) == 8
    assert "column=gaussian-grp+div-8,lr-local=0.5,seed=3" in {r.name for r in runs}
    run = next(r for r in runs if r.name == "column=gaussian-grp+div-8,lr-local=0.5,seed=3")
    assert (run.config["lr_local"], run.config["groups"], run.config["seed"]) == (0.5, 8, 3)
    assert run.config["data_root"] == str(data_root) and run.config["hidden"] == [32, 32]
    # backprop has no local learning rate: that axis makes an invalid run, named with its reason
    bad = [r for r in runs if r.error]
    assert len(bad) == 4 and all("lr_local" in r.error and "backprop" in r.error for r in bad)


def test_unknown_keys_and_values_name_the_key_and_nearest(data_root):
    cases = [({"lr-locl": 0.5}, ["lr-locl", "lr-local"]),
             ({"hiden": [8]}, ["hiden", "hidden"]),
             ({"epochs": "two"}, ["epochs", "invalid int value"]),
             ({"hidden": "wide"}, ["hidden", "invalid int value"]),
             ({"batchnorm": 1}, ["batchnorm", "true or false"]),
             ({"seed": 3}, ["seed", "seeds = [...]"]),
             ({"out": "x"}, ["out", "--out DIR"])]
    for base, words in cases:
        spec = _spec(data_root)
        spec["base"].update(base)
        with pytest.raises(SpecError) as info:
            expand(read_spec(spec))
        assert all(w in str(info.value) for w in words), (base, str(info.value))
    with pytest.raises(SpecError, match="unknown top-level key 'axis'.*did you mean axes"):
        read_spec({"axis": {}})
    with pytest.raises(SpecError, match="seeds lists a seed twice"):
        read_spec({"seeds": [1, 1]})
    spec = _spec(data_root)
    spec["axes"]["rule"] = ["gausian"]
    with pytest.raises(SpecError, match="set by both"):          # rule is in column's tables too
        expand(read_spec(spec))
    del spec["axes"]["column"]
    runs = resolve(expand(read_spec(spec)))
    assert all("rule='gausian'" in r.error and "did you mean 'gaussian'" in r.error for r in runs)


def test_new_train_flags_work_in_specs_with_no_sweep_change(data_root, monkeypatch):
    from threefactor.cli import train
    original = train.configure_parser

    def with_new_flag(parser):
        original(parser)
        parser.add_argument("--new-knob", dest="new_knob", type=int, default=argparse_suppress())
        return parser
    monkeypatch.setattr(train, "configure_parser", with_new_flag)
    spec = _spec(data_root)
    spec["base"]["new_knob"] = 3
    assert "--new-knob=3" in expand(read_spec(spec))[0].argv
    del spec["base"]["new_knob"]
    spec["base"]["new-knob"] = "three"
    with pytest.raises(SpecError, match="new-knob.*invalid int value"):
        expand(read_spec(spec))


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def test_invalid_axis_is_reported_at_dry_run_before_anything_trains(data_root, tmp_path, capsys):
    spec = _spec(data_root)
    spec["axes"]["hidden"] = [[32, 32], [30, 30]]      # 8 groups do not divide 30
    del spec["base"]["hidden"]
    path = tmp_path / "spec.toml"
    path.write_text(_toml(spec))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "2 of the 8 runs are not valid" in err and "column=gaussian-grp+div-8,hidden=30x30,seed=0" in err
    assert "groups=8 does not divide" in err and not out.exists()
    # --only keeps the valid part, and --dry-run lists it
    assert cli.main(["sweep", str(path), "--out", str(out), "--dry-run", "--only", "hidden=32,32"]) == 0
    listed = capsys.readouterr().out
    assert "4 runs under" in listed and "would train 4" in listed and not out.exists()
    assert cli.main(["sweep", str(path), "--out", str(out), "--only", "hiden=32"]) == 2
    assert "did you mean hidden" in capsys.readouterr().err
    assert cli.main(["sweep", str(path), "--out", str(out), "--only", "rule=gausian"]) == 2
    assert "its values: backprop, gaussian" in capsys.readouterr().err
    # names in the one vocabulary: any case, old spellings
    assert cli.main(["sweep", str(path), "--out", str(out), "--dry-run", "--only", "hidden=32,32",
                     "--only", "rule=Gauss"]) == 0
    assert "2 runs under" in capsys.readouterr().out
    assert cli.main(["sweep", str(path), "--out", str(out), "--runs-per-gpu", "2", "--only", "hidden=32,32"]) == 2
    assert "needs GPU runs" in capsys.readouterr().err
    path.write_text("[base\nepochs = 1\n")
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_gpu_runs_ask_for_a_share_of_a_gpu():
    assert task_resources({"backend": "cupy"}, 4) == {"GPU": 0.25}
    assert task_resources({"backend": "numba"}, 4) is None
    specs = gpu_workers(2, 3)
    assert len(specs) == 6
    assert sorted(s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()) == list("000111")
    assert all(s["options"]["resources"] == {"GPU": 1 / 3} and s["options"]["nthreads"] == 1
               for s in specs.values())


# -- on a Dask cluster of 2 worker processes ------------------------------------

@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    import logging
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as c:
        yield c


def test_sweep_equals_serial_train_and_a_finished_sweep_trains_nothing(data_root, tmp_path, cluster, capsys):
    spec = _spec(data_root, epochs=2, seeds=(1,))
    spec["axes"]["lr-out"] = [0.05, 1e9]           # the second diverges: recorded, not retried
    spec["base"].pop("lr-out")
    out = tmp_path / "sweep"
    result = sweep(spec, out, scheduler=cluster.scheduler_address, log=_quiet, progress=False)
    assert result.ok and result.counts == {"done": 2, "diverged": 2}
    for run in expand(read_spec(spec)):
        if run.options["lr_out"] == 0.05 and run.options["seed"] == 1:
            alone = tmp_path / "alone" / run.name
            # the sweep ran it on 1 BLAS thread (--threads-per-run 1): OpenBLAS's float32 sums depend on
            # its thread count, so `threefactor train` gives these numbers bit for bit at 1 thread
            with threadpoolctl.threadpool_limits(1):
                assert cli.main(["train", *run.argv, "--out", str(alone), "--no-progress"]) == 0
            _assert_same_run(out / run.name, alone)
    assert {r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]} == {"done", "diverged"}
    assert (out / "table.csv").read_text().startswith("dataset,row,column,mean")
    (out / "table.csv").unlink()
    (out / "curves.png").unlink()
    assert cli.main(["table", str(out)]) == 0                    # a sweep's folder: table, CSV and figure again
    assert "| MNIST (lr_out=0.05) | " in capsys.readouterr().out
    assert (out / "curves.png").stat().st_size > 0
    lines = (out / "table.csv").read_text().splitlines()
    assert lines[0] == "dataset,row,column,mean,max_min,n,seeds,epochs,paper_mean,paper_max_min"
    assert lines[1].startswith("mnist,lr_out=0.05,backprop,") and lines[1].endswith(",98.6,0.2")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.name != "sweep.log"}
    again = sweep(spec, out, scheduler="tcp://127.0.0.1:1", log=_quiet, progress=False, table=False)
    assert again.ok and not any(r["trained"] for r in again.runs)   # no cluster needed: nothing to train
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.name != "sweep.log"}


@pytest.fixture(scope="module")
def long_spec(data_root):
    """Runs long enough (8 epochs of 600 samples) to be stopped in the middle."""
    spec = _spec(data_root, epochs=8, hidden=[64, 64], batch_size=10)
    spec["axes"] = {"column": spec["axes"]["column"][1:]}
    return spec


@pytest.fixture(scope="module")
def uninterrupted(long_spec, cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert sweep(long_spec, out, scheduler=cluster.scheduler_address, log=_quiet, progress=False, table=False).ok
    return out


def _wait_mid_run(out, epochs, timeout=60):
    """A run directory under ``out`` that has finished an epoch but not all (polls)."""
    end = time.time() + timeout
    while time.time() < end:
        for path in out.glob("*"):
            done = len(RunDir(path).read_metrics())
            if 1 <= done < epochs - 1 and RunDir(path).has_checkpoint():
                return path
        time.sleep(0.01)
    raise AssertionError(f"no run under {out} got to the middle in {timeout} s")


def test_killed_worker_run_is_resumed_bit_identical(long_spec, cluster, uninterrupted, tmp_path):
    out = tmp_path / "sweep"
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", sweep(
        long_spec, out, scheduler=cluster.scheduler_address, log=_quiet, progress=False, table=False)))
    thread.start()
    victim = _wait_mid_run(out, 8)
    pid = int((victim / "sweep.log").read_text().splitlines()[0].split("pid ")[1])
    os.kill(pid, signal.SIGKILL)
    thread.join(120)
    assert box["result"].ok and box["result"].counts == {"done": 2}
    log = (victim / "sweep.log").read_text()
    assert log.count("attempt") == 2 and "resuming" in log       # started again, from its checkpoint
    for run in expand(read_spec(long_spec)):
        _assert_same_run(out / run.name, uninterrupted / run.name)


def test_interrupted_sweep_resumes(long_spec, cluster, uninterrupted, tmp_path):
    spec_path, out = tmp_path / "spec.toml", tmp_path / "sweep"
    spec_path.write_text(_toml(long_spec))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # SIGINT at its default in the child: where the tests themselves run in the background of a
    # non-interactive shell (`bash .ci/run &`) SIGINT is ignored and a child would inherit that
    proc = subprocess.Popen([sys.executable, "-m", "threefactor", "sweep", str(spec_path), "--out", str(out),
                             "--workers", "2", "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_mid_run(out, 8)
        proc.send_signal(signal.SIGINT)
        printed, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, printed
    assert "interrupted" in printed and not (out / ".sweep.lock").exists()
    unfinished = [p for p in out.glob("column=*") if len(RunDir(p).read_metrics()) < 8]
    saved = [p for p in unfinished if RunDir(p).has_checkpoint()]
    assert saved
    result = sweep(spec_path, out, scheduler=cluster.scheduler_address, log=_quiet, progress=False, table=False)
    assert result.ok and all(r["trained"] for r in result.runs if Path(r["path"]) in unfinished)
    assert all("resuming" in (p / "sweep.log").read_text() for p in saved)
    for run in expand(read_spec(long_spec)):
        _assert_same_run(out / run.name, uninterrupted / run.name)


def test_scheduler_and_workers_started_apart_serve_scheduler(data_root, tmp_path, capsys):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    address_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(address_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        end = time.time() + 60
        while not address_file.exists() and time.time() < end:
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        procs.append(subprocess.Popen(["dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        spec = _spec(data_root, epochs=1, seeds=(0,))
        path = tmp_path / "spec.toml"
        path.write_text(_toml(spec))
        assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), "--scheduler", address,
                         "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert f"scheduler {address}" in printed and "2 runs: 2 done" in printed
        assert all(len(RunDir(tmp_path / "out" / r.name).read_metrics()) == 1 for r in expand(read_spec(spec)))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_directory_holding_another_run_is_never_overwritten(data_root, tmp_path, capsys):
    spec = _spec(data_root, epochs=1, seeds=(0,))
    run = expand(read_spec(spec))[0]
    out = tmp_path / "out"
    assert cli.main(["train", *run.argv, "--lr-out", "0.01", "--out", str(out / run.name), "--no-progress"]) == 0
    before = (out / run.name / "metrics.jsonl").read_text()
    csv, png = tmp_path / "t" / "table.csv", tmp_path / "t" / "curves.png"
    capsys.readouterr()
    assert cli.main(["table", str(out), "--csv", str(csv), "--figure", str(png)]) == 0   # any runs, not a sweep
    assert f"written: {csv}, {png}" in capsys.readouterr().out
    assert csv.read_text().splitlines()[1].startswith("mnist,,backprop,") and png.stat().st_size > 0
    assert not (out / "table.csv").exists()
    with pytest.raises(SpecError, match="another configuration .*lr_out 0.01 on disk, 0.05 in the spec"):
        plan(spec, out)
    assert (out / run.name / "metrics.jsonl").read_text() == before
    spec["base"]["epochs"] = 3
    assert [s.status for s in plan(spec, tmp_path / "other")[1]] == ["new", "new"]
    # one folder, one sweep at a time: a live sweep's lock is respected, a dead one's taken over
    (tmp_path / "other").mkdir()
    lock = tmp_path / "other" / ".sweep.lock"
    lock.write_text(json.dumps({"token": "x", "host": socket.gethostname(), "pid": os.getpid(), "started": "t"}))
    with pytest.raises(SpecError, match=f"is being swept by pid {os.getpid()}"):
        sweep(spec, tmp_path / "other", log=_quiet)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"token": "x", "host": socket.gethostname(), "pid": int(dead.stdout), "started": "t"}))
    assert sweep(spec, tmp_path / "other", dry_run=True, log=_quiet).counts == {"new": 2}
    _take_lock(tmp_path / "other", "mine")
    assert json.loads(lock.read_text())["token"] == "mine"


def test_a_failing_run_is_reported_and_the_sweep_exits_1(data_root, tmp_path, cluster, capsys):
    spec = _spec(data_root, epochs=1, seeds=(0,), subset=5000)      # more samples than the 600 there are
    spec["axes"] = {"column": spec["axes"]["column"][:1]}
    path = tmp_path / "spec.toml"
    path.write_text(_toml(spec))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--scheduler", cluster.scheduler_address,
                     "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "1 runs: 0 done (0 trained now, 0 already finished), 0 diverged, 1 failed" in printed
    assert "subset=5000 (--subset) is more than the 600 samples" in printed and "sweep.log" in printed
    assert json.loads((out / "sweep.json").read_text())["summary"] == {"failed": 1}
    assert not (out / ".sweep.lock").exists()


@pytest.mark.parametrize("flag, value, says", [("--workers", "0", "the number of workers must be >= 1, got '0'"),
                                               ("--workers", "two", "the number of workers must be a number >= 1"),
                                               ("--runs-per-gpu", "-1", "the number of runs per GPU must be >= 1"),
                                               ("--threads-per-run", "0", "the thread count of a run must be >= 1"),
                                               ("--retries", "-1", "the number of retries must be >= 0")])
def test_bad_sweep_numbers_are_named_once(tmp_path, capsys, flag, value, says):
    """argparse already names the flag ("argument --workers: ..."): the message says what it is, not the
    flag again."""
    spec = tmp_path / "s.toml"
    spec.write_text('[train]\nepochs = 1\n')
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", str(spec), "--out", str(tmp_path / "o"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"threefactor sweep: error: argument {flag}: {says}" in err
    assert f"{flag}: {flag}" not in err

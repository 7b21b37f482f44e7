"""One training run per model_dir: the lock, refusing an earlier run, --overwrite, signals."""

import json
import logging
import os
import signal
import socket

import pytest

from recforge.config import ConfigError
from recforge.errors import Preempted
from recforge.utils.preemption import StopSignals
from recforge.utils.run_dir import claim_model_dir, earlier_run
from recforge.utils.run_lock import LOCK_FILE, RunLock, _process_start_time


def _dead_pid() -> int:
    """A pid that no process has now."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while pid > 1:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1
    raise AssertionError("no free pid")


def _write_lock(model_dir, **record) -> str:
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "started": "earlier", **record}, f)
    return path


def _read(path) -> dict:
    with open(path) as f:
        return json.load(f)


def _checkpoint(model_dir, step: int) -> str:
    path = os.path.join(model_dir, f"model.ckpt-{step}")
    os.makedirs(path)
    with open(os.path.join(path, "train_state.json"), "w") as f:
        json.dump({"global_step": step}, f)
    return path


def test_lock_is_exclusive_and_released(tmp_path):
    model_dir = str(tmp_path / "m")
    with RunLock(model_dir) as lock:
        record = _read(lock.path)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(ConfigError, match="in use by another training run") as error:
            RunLock(model_dir).acquire()
        assert f"pid {os.getpid()}" in str(error.value)
    assert not os.path.exists(os.path.join(model_dir, LOCK_FILE))
    RunLock(model_dir).acquire()  # free again


def test_stale_lock_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    model_dir = str(tmp_path / "m")
    path = _write_lock(model_dir, pid=_dead_pid())
    logger = logging.getLogger("recforge.utils.run_lock")
    logger.addHandler(caplog.handler)
    try:
        with RunLock(model_dir):
            assert _read(path)["pid"] == os.getpid()
    finally:
        logger.removeHandler(caplog.handler)
    assert "took over the stale lock" in caplog.text
    assert os.listdir(model_dir) == []  # no leftover lock files


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    """The pid is alive, but it is another process than the one that took the lock."""
    if _process_start_time(os.getpid()) is None:
        pytest.skip("no /proc: process start times are unknown")
    model_dir = str(tmp_path / "m")
    path = _write_lock(model_dir, pid=os.getpid(), start_time="1")
    with RunLock(model_dir):
        assert _read(path)["start_time"] == _process_start_time(os.getpid())


def test_lock_from_another_host_is_not_taken_over(tmp_path):
    model_dir = str(tmp_path / "m")
    path = _write_lock(model_dir, pid=_dead_pid(), host="elsewhere.example")
    with pytest.raises(ConfigError, match="on host elsewhere.example") as error:
        RunLock(model_dir).acquire()
    assert f"remove {path}" in str(error.value)
    assert _read(path)["host"] == "elsewhere.example"


def test_unreadable_lock_is_reported(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / LOCK_FILE).write_text("garbage")
    with pytest.raises(ConfigError, match="expected a recforge lock"):
        RunLock(str(model_dir)).acquire()


def test_earlier_run_is_refused_without_continue_train_or_overwrite(tmp_path):
    model_dir = str(tmp_path / "m")
    assert earlier_run(model_dir) == []
    _checkpoint(model_dir, 40)
    assert earlier_run(model_dir) == ["model.ckpt-40"]
    with pytest.raises(ConfigError, match="holds an earlier run .model.ckpt-40.") as error:
        claim_model_dir(model_dir)
    assert "--continue_train" in str(error.value) and "--overwrite" in str(error.value)
    assert not os.path.exists(os.path.join(model_dir, LOCK_FILE))  # released on refusal
    lock, _ = claim_model_dir(model_dir, continue_train=True)
    assert lock.held and os.path.isdir(os.path.join(model_dir, "model.ckpt-40"))
    lock.release()


def test_run_records_alone_count_as_an_earlier_run(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "pipeline.config").write_text("")
    assert earlier_run(str(model_dir)) == []
    (model_dir / "eval_history.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="eval_history.jsonl"):
        claim_model_dir(str(model_dir))


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
    model_dir = str(tmp_path / "m")
    old_checkpoint = _checkpoint(model_dir, 40)
    (tmp_path / "m" / "eval_history.jsonl").write_text('{"global_step": 40}\n')
    lock, fine_tune = claim_model_dir(
        model_dir + "/", overwrite=True, fine_tune_checkpoint=old_checkpoint
    )
    try:
        assert sorted(os.listdir(model_dir)) == [LOCK_FILE]
        (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("m.old-")]
        assert sorted(os.listdir(moved)) == ["eval_history.jsonl", "model.ckpt-40"]
        # a fine-tune checkpoint of the earlier run is read from where it went
        assert fine_tune == os.path.join(str(moved), "model.ckpt-40")
        assert os.path.isfile(os.path.join(fine_tune, "train_state.json"))
    finally:
        lock.release()
    _checkpoint(model_dir, 7)
    lock, _ = claim_model_dir(model_dir, overwrite=True)  # same second: another name
    lock.release()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("m.old-")]) == 2


def test_second_training_run_is_refused_by_the_cli(tmp_path, monkeypatch, capsys):
    from recforge.cli import main
    from tests.helpers.tiny_run import CONFIG, CSV

    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "ok.config").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    _write_lock("model", pid=os.getppid())  # a live process on this host
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config", "ok.config"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("recforge: error: model_dir 'model' is in use"), err
    assert "Traceback" not in "\n".join(err)
    assert _read(os.path.join("model", LOCK_FILE))["pid"] == os.getppid()  # left alone


def test_stop_signals_turn_sigterm_into_a_request():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        assert signals.signum == 0
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM  # the process lives on
    assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_exits_with_the_signal_status():
    stopped = Preempted(signal.SIGTERM, 37, "m/model.ckpt-37")
    assert stopped.exit_code == 143
    assert "SIGTERM at step 37" in str(stopped) and "--continue_train" in str(stopped)


def test_continue_train_and_overwrite_exclude_each_other(capsys):
    from recforge.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["train", "--config", "x", "--continue_train", "--overwrite"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="exclude each other"):
        claim_model_dir("unused", continue_train=True, overwrite=True)

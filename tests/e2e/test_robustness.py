"""Every bad input of the corpus gets one located line on stderr, exit status 2, no traceback.

Each folder in ``cases/`` is one bad input:

* ``pipeline.config``: the config (usually ``base.config`` with one mistake); ``data/`` in the
  case's working directory is the shared data set (``data/``, see ``make_data.py``);
* any bad data files the case reads (committed files, never generated in the test);
* ``expect.txt``: a regular expression the ``recforge: error: ...`` line must match;
* ``args.txt`` (optional): the command line (default ``train --config pipeline.config``).

Cases run in this process through ``recforge.cli.main``, so the whole corpus costs seconds.
"""

import contextlib
import gc
import io
import logging
import os
import re
import shlex
import shutil

import pytest
import torch.utils.data._utils

from tests.helpers.paths import ROBUSTNESS_DIR

HERE = ROBUSTNESS_DIR  # the corpus: cases/, data/, base.config
CASES = os.path.join(HERE, "cases")
DEFAULT_ARGS = "train --config pipeline.config"


def _case_names() -> list[str]:
    names = os.listdir(CASES)
    return sorted(n for n in names if os.path.isfile(os.path.join(CASES, n, "expect.txt")))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """Runs ``recforge ARGV`` in this process; returns (exit status, stderr).

    The command sets up logging for a process it owns; the loggers are put back afterwards.
    """
    from recforge.cli import main
    from recforge.utils import dist
    from recforge.utils.logging_util import PACKAGE_LOGGER, QUIET_LOGGERS

    loggers = [logging.getLogger(name) for name in (PACKAGE_LOGGER, *QUIET_LOGGERS)]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    package_logger = loggers[0]
    for handler in list(package_logger.handlers):  # log to this run's stderr, not a stale one
        package_logger.removeHandler(handler)
    stderr = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(stderr):
            code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            stderr.write(f"{e.code}\n")
    finally:
        for lg, level, propagate, handlers in saved:
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers
        dist.destroy_process_group()
    return code, stderr.getvalue()


def _prepare(name: str, tmp_path) -> list[str]:
    work = tmp_path / name
    shutil.copytree(os.path.join(CASES, name), work)
    os.symlink(os.path.join(HERE, "data"), work / "data")
    args_file = work / "args.txt"
    return shlex.split(_read(args_file) if args_file.exists() else DEFAULT_ARGS, comments=True)


def test_base_config_trains(tmp_path, monkeypatch):
    work = tmp_path / "base"
    work.mkdir()
    shutil.copy(os.path.join(HERE, "base.config"), work / "pipeline.config")
    os.symlink(os.path.join(HERE, "data"), work / "data")
    monkeypatch.chdir(work)
    code, stderr = run_in_process(DEFAULT_ARGS.split())
    assert code == 0, stderr
    assert os.path.isfile(work / "model" / "eval_result.json")


@pytest.mark.parametrize("name", _case_names())
def test_bad_input_gets_one_located_line(name, tmp_path, monkeypatch):
    argv = _prepare(name, tmp_path)
    monkeypatch.chdir(tmp_path / name)
    monkeypatch.syspath_prepend(str(tmp_path / name))  # as `python -m recforge` run there
    # a failed run leaves its DataLoader workers, which this process (unlike the command,
    # which exits) stops when it collects them: give each 0.1 s to exit, not 5 s
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.1)
    expected = _read(os.path.join(CASES, name, "expect.txt")).strip()
    code, stderr = run_in_process(argv)
    gc.collect()
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("recforge: error: ")]
    assert code == 2 and len(errors) == 1, f"exit {code}\n{stderr}"
    assert re.search(expected, errors[0]), f"{errors[0]!r} does not match {expected!r}"

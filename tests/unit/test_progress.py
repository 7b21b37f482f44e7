"""The terminal progress bar of training (tests/e2e/test_ux_cli.py checks the plain lines)."""

import io
import logging

from recforge.utils.progress import TrainProgress, is_terminal


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_is_terminal():
    assert is_terminal(_Terminal()) and not is_terminal(io.StringIO())


def test_bar_shows_steps_loss_and_throughput():
    stream = _Terminal()
    progress = TrainProgress(enabled=True, initial=4, total=10, stream=stream)
    assert progress.active
    progress.show(1, 0.5, 123.0, " | auc 0.7000")
    progress.step()
    progress.close()
    text = stream.getvalue()
    assert "5/10" in text and "loss 0.50000" in text and "123 samples/s" in text
    assert "auc 0.7000" in text and not progress.active


def test_total_becomes_known_later():
    stream = _Terminal()
    progress = TrainProgress(enabled=True, stream=stream)
    progress.step()
    progress.step(total=8)
    progress.close()
    assert "2/8" in stream.getvalue()


def test_disabled_progress_writes_nothing_and_leaves_logging_alone():
    progress = TrainProgress(enabled=False)
    handlers = list(logging.getLogger("recforge").handlers)
    with progress.logs_above():
        progress.step(total=3)
        progress.show(0, 1.0, 1.0)
        assert logging.getLogger("recforge").handlers == handlers
    assert not progress.active

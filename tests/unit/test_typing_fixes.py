"""Behaviour that type checking showed to be wrong, fixed with the annotations (issue 19)."""

from __future__ import annotations

import pytest

from recforge.config import ConfigError
from recforge.modules.activation import create_activation
from recforge.utils.run_lock import RunLock


def test_activation_rejects_a_keyword_mapping():
    # a ``**mapping`` argument has no keyword name: one error line, not a TypeError later
    with pytest.raises(ValueError, match="expected keyword arguments"):
        create_activation("nn.PReLU(**{'init': 0.1})")
    assert create_activation("nn.PReLU(init=0.1)").weight.item() == pytest.approx(0.1)


def test_busy_lock_that_vanished_before_it_was_read_is_reported(tmp_path, monkeypatch):
    # another run holds the lock, then releases it before this run can read who held it
    lock = RunLock(str(tmp_path))
    monkeypatch.setattr(lock, "_create", lambda record: False)
    monkeypatch.setattr(lock, "_read", lambda: None)
    with pytest.raises(ConfigError, match=r"in use by another training run \(pid \? on host \?"):
        lock.acquire()

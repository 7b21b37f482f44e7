"""An exclusive lock on a ``model_dir``: one training run writes into it at a time.

The lock is a file, ``model_dir/train.lock``, holding JSON that names its owner (pid, host,
process start time, a random token, when it started and the command). It is created
atomically with its content (written under a unique name, then hard-linked into place, which
fails if the lock exists), so a reader never sees a half-written lock.

A lock whose owner is gone is stale: on the same host, when its pid is not alive (or is alive
but started at another time: the pid was reused), it is taken over with a warning; on another
host recforge cannot tell, so it asks the user to remove the file if no run is live there.

A remote ``model_dir`` (``s3://...``, see :mod:`recforge.utils.storage`) gets the same lock
as an object, best effort: it is taken in the run's local working copy and uploaded at once,
and deleted on release. Object stores have no create-if-absent, so two runs that start at the
same moment may both take it; a run killed with SIGKILL leaves the object behind (taken over
on the same host as above, otherwise the message names it for removal).

Example:
    >>> with RunLock("experiments/x"):
    ...     pass  # train: a second RunLock("experiments/x").acquire() raises ConfigError

"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from typing import Any, Optional

from recforge.config import ConfigError
from recforge.utils import storage
from recforge.utils.layout import LOCK_FILE

logger = logging.getLogger(__name__)


def _process_start_time(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count after it
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """The exclusive training lock of one ``model_dir``.

    Args:
        model_dir: the directory to lock (created if needed).

    Attributes:
        path: the lock file.

    """

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._token: Optional[str] = None
        # what messages name: the URL of a remote model_dir, not its local working copy
        self._shown_dir = storage.remote_of(model_dir) or model_dir
        self._shown = storage.remote_of(self.path) or self.path

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._token is not None

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one on this host.

        Raises:
            ConfigError: another live run holds it, or it is held from another host, or the
                lock file is unreadable.

        """
        if self.held:
            return
        os.makedirs(self.model_dir, exist_ok=True)
        token = uuid.uuid4().hex
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": _process_start_time(os.getpid()),
            "token": token,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        if not self._create(record):
            owner = self._read()
            self._check_stale(owner)
            if not self._take_over(owner) or not self._create(record):
                raise ConfigError(self._busy_message(self._read() or owner))
        self._token = token
        storage.sync_model_dir(self.model_dir)  # a remote model_dir: publish the lock object

    def release(self) -> None:
        """Removes the lock file if this object still holds it."""
        if not self.held:
            return
        try:
            owner = self._read()
        except ConfigError:  # no longer a lock of ours: leave it to its writer
            owner = None
        if owner is not None and owner.get("token") == self._token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            storage.remove_remote_copy(self.path)
        self._token = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _create(self, record: dict[str, Any]) -> bool:
        """Creates the lock file with ``record`` in it; False if a lock file exists."""
        tmp = f"{self.path}.{record['token']}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def _read(self) -> Optional[dict[str, Any]]:
        """The lock file's record (None when there is no lock file)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            int(record["pid"]), str(record["host"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{self._shown}: expected a recforge lock (JSON with pid and host), found"
                f" {text[:80]!r}; remove the file if no training run is using"
                f" '{self._shown_dir}'"
            ) from None
        return record

    def _check_stale(self, owner: Optional[dict[str, Any]]) -> None:
        """Raises unless ``owner`` is a stale lock on this host (or the lock is gone)."""
        if owner is None:
            return
        if owner["host"] != socket.gethostname():
            raise ConfigError(
                f"{self._busy_message(owner)}; recforge cannot check a process on another host:"
                f" if no run is live there, remove {self._shown}"
            )
        pid = int(owner["pid"])
        start_time = owner.get("start_time")
        alive = _pid_alive(pid) and (
            start_time is None or _process_start_time(pid) in (None, start_time)
        )
        if alive:
            raise ConfigError(self._busy_message(owner))

    def _take_over(self, owner: Optional[dict[str, Any]]) -> bool:
        """Moves the stale lock ``owner`` out of the way; False if another run got there first."""
        if owner is None:
            return True
        aside = f"{self.path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        try:
            with open(aside) as f:
                moved = json.load(f)
        except ValueError:
            moved = None
        if moved != owner:
            # another run took the stale lock over between our read and the rename: put its
            # lock back (link fails if a third run created one meanwhile: that one holds it)
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        logger.warning(
            "took over the stale lock %s of pid %s on %s (started %s), which is no longer running",
            self.path,
            owner["pid"],
            owner["host"],
            owner.get("started", "?"),
        )
        return True

    def _busy_message(self, owner: Optional[dict[str, Any]]) -> str:
        owner = owner or {}  # None: the lock changed hands again before it could be read
        return (
            f"model_dir '{self._shown_dir}' is in use by another training run (pid"
            f" {owner.get('pid', '?')} on host {owner.get('host', '?')}, started"
            f" {owner.get('started', '?')}): one training run"
            " per model_dir; wait for it or stop it, or choose another --model_dir"
            " (`recforge evaluate` may run alongside)"
        )

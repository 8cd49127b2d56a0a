"""One training run per work dir: :class:`WorkDirLock` and ``kat_backbones.WorkDirLockHook``.

Two runs in one ``--work-dir`` (a job submitted twice, a requeued job whose first instance still runs) both write
``last_checkpoint`` and rotate each other's checkpoints away. The lock refuses the second run with the first one's
process id, host, start time and command line.

The lock is an advisory ``flock`` on ``WORK_DIR/.kat_run.lock`` (the file holds the owner's description). The
kernel drops it when the owning process ends in any way, SIGKILL included, so a lock is never left behind: a lock
file that is present but not locked is a stale one from a run that was killed; it is reported and taken over. The file
itself is never deleted (deleting a lock file lets two processes lock two different files). On file systems without
``flock`` (some Lustre/NFS mounts) it falls back to checking whether the recorded process is alive on this host and
says that another host's run cannot be detected there.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import os.path as osp
import socket
import sys
import time
from typing import Any

from mmengine.dist import broadcast_object_list, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop

from .registry import HOOKS

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid check below still applies
    fcntl = None

__all__ = ["LOCK_NAME", "WorkDirBusyError", "WorkDirLock", "WorkDirLockHook"]

#: Name of the lock file inside the work dir.
LOCK_NAME = ".kat_run.lock"


class WorkDirBusyError(RuntimeError):
    """Another run holds the work dir. ``owner`` is its description (pid, host, started, argv), when readable."""

    def __init__(self, message: str, owner: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.owner = owner


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "a run whose description could not be read"
    cmd = " ".join(owner.get("argv", [])) or "?"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')} (command: {cmd})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkDirLock:
    """An exclusive, non-blocking lock on a work dir (see the module docstring); also a context manager.

    Args:
        work_dir (str): The directory (created if missing).
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = osp.abspath(work_dir)
        self.path = osp.join(self.work_dir, LOCK_NAME)
        self._fd: int | None = None
        self.stale: dict[str, Any] | None = None  # a killed run's description found when acquiring

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            with open(self.path) as f:
                text = f.read().strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> WorkDirLock:
        """Takes the lock.

        Raises:
            WorkDirBusyError: Another live run holds it (the message names that run and what to do).
        """
        if self.held:
            return self
        os.makedirs(self.work_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = self._read_owner()
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                os.close(fd)
                self._refuse(previous)
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
        if not locked:  # no flock here: a live process on this host recorded in the file is the only evidence
            if previous and previous.get("host") == socket.gethostname() and _pid_alive(int(previous["pid"])):
                if int(previous["pid"]) != os.getpid():
                    os.close(fd)
                    self._refuse(previous)
            print_log(
                f"WorkDirLock: {self.path} cannot be flock()ed on this file system; only runs on this host are "
                "detected",
                logger="current",
                level=logging.WARNING,
            )
        if previous and previous.get("state") == "running":
            self.stale = previous  # recorded as running, but nobody holds the lock: killed without cleanup
        owner = dict(
            state="running",
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            argv=list(sys.argv),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        return self

    def _refuse(self, owner: dict[str, Any] | None) -> None:
        raise WorkDirBusyError(
            f"work dir {self.work_dir} is in use by another training run: {_describe(owner)}. Two runs in one work "
            "dir overwrite each other's checkpoints and last_checkpoint. Wait for that run to end (or stop it), or "
            "give this run another --work-dir.",
            owner,
        )

    def release(self) -> None:
        """Marks the lock file released and drops the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(dict(state="released", pid=os.getpid(), host=socket.gethostname())).encode(), 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Holds a :class:`WorkDirLock` on ``runner.work_dir`` while a run trains
    (``type='kat_backbones.WorkDirLockHook'``).

    Taken in ``before_run`` (before any hook touches checkpoints or ``last_checkpoint``) by the first process; its
    verdict is broadcast, so in a distributed run every process raises :class:`WorkDirBusyError` together. Released
    in ``after_run``, by :meth:`release` (``tools/train.py`` calls it when a run ends with an exception) and by the
    kernel when the process dies. Evaluation-only runners (``Runner.test``) don't lock.
    """

    priority = "HIGHEST"

    def __init__(self) -> None:
        self.lock: WorkDirLock | None = None

    def before_run(self, runner) -> None:
        if not isinstance(getattr(runner, "_train_loop", None), BaseLoop):
            return  # Runner.test / Runner.val
        error: str | None = None
        if get_rank() == 0:
            self.lock = WorkDirLock(runner.work_dir)
            try:
                self.lock.acquire()
            except WorkDirBusyError as err:
                error = str(err)
        if get_world_size() > 1:
            verdict = [error]
            broadcast_object_list(verdict, src=0)
            error = verdict[0]
        if error is not None:
            print_log(error, logger="current", level=logging.ERROR)
            raise WorkDirBusyError(error, None)
        if self.lock is not None and self.lock.stale:
            print_log(
                "WorkDirLockHook: found the lock of a run that ended without releasing it "
                f"({_describe(self.lock.stale)}; killed?); taking over",
                logger="current",
                level=logging.WARNING,
            )

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def after_run(self, runner) -> None:
        self.release()

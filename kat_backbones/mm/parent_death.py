"""Data-loader workers that die with their parent: :func:`die_with_parent`.

A PyTorch data worker only notices a dead parent while it waits for work (its watchdog polls every 5 s). A worker
blocked writing a prefetched batch into the pipe of a parent that was killed (SIGKILL, a crash, a preemption)
waits forever: parent PID 1, hundreds of MB each, on a cluster node until it is rebooted.

:func:`die_with_parent` makes the kernel kill the calling process when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux), and falls back to a daemon thread that polls ``os.getppid()`` once a
second elsewhere. :func:`leave_stop_signals_to_parent` keeps a cluster's SIGTERM/SIGUSR1 (sent to every process) from
killing a worker while its parent checkpoints. :class:`~kat_backbones.mm.guarded_dataset.GuardedDataset` calls both in
every worker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "leave_stop_signals_to_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_armed_pid: int | None = None  # the process already armed (a forked child re-arms: the setting is not inherited)


def _watch_parent(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # no cleanup: the parent that would consume our results is gone
        time.sleep(interval)


def die_with_parent(parent_pid: int, interval: float = 1.0) -> str:
    """Ends this process as soon as ``parent_pid`` (its parent) dies, however it dies. Idempotent per process.

    Args:
        parent_pid (int): The pid of the parent as seen before the fork; if the parent already died (this process
            was re-parented) it exits at once.
        interval (float): Polling period of the fallback thread, seconds. Defaults to 1.0.

    Returns:
        str: ``'prctl'`` or ``'thread'``: the mechanism in use.
    """
    global _armed_pid
    mechanism = "thread"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                mechanism = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)
    if mechanism == "thread" and _armed_pid != os.getpid():
        threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="die-with-parent", daemon=True).start()
    _armed_pid = os.getpid()
    return mechanism


_STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


def leave_stop_signals_to_parent(parent_pid: int) -> bool:
    """In a worker process: SIGTERM / SIGUSR1 sent by ``parent_pid`` (multiprocessing's ``terminate()``) act as
    usual; sent by anyone else (a cluster signalling every process) they are dropped while the parent lives.

    A signal handler cannot tell who sent a signal, so the signals are blocked in this (single-threaded, just
    forked) process, whose later threads inherit the mask, and a daemon thread takes them with ``sigwaitinfo``,
    which reports the sender. Linux only (elsewhere nothing changes).

    Returns:
        bool: Whether the filter is in place.
    """
    if not sys.platform.startswith("linux") or not hasattr(signal, "sigwaitinfo"):
        return False
    signals = {getattr(signal, name) for name in _STOP_SIGNALS}

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo(signals)
            if info.si_pid == parent_pid or os.getppid() != parent_pid:
                # obey, as the parent expects (signal.signal is main-thread only, so no re-raise: exit at once)
                os._exit(128 + info.si_signo)

    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=wait, name="stop-signals-to-parent", daemon=True).start()
    return True

"""Test servers die with the test process, even when it is killed (SIGTERM, SIGKILL)."""

from __future__ import annotations

import ctypes
import signal
import socket
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGKILL when the thread that started it ends (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


CLONE_NEWUTS = 0x04000000


def as_host(name: str) -> Callable[[], None]:
    """A `preexec_fn`: the child runs as another machine, with a host name of its own (a UTS
    namespace; needs root on Linux; see `can_be_another_host`)."""
    def enter() -> None:
        if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUTS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS)")
        socket.sethostname(name)
    return enter


def can_be_another_host() -> bool:
    import subprocess

    if sys.platform != "linux":
        return False
    try:
        done = subprocess.run(["true"], preexec_fn=as_host("probe-host"), check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0

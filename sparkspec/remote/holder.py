"""Whether the process that wrote a claim is still running, for a claim of this very machine.

A claim names its holder's host and pid, the start of that process (so a pid reused by
another process is not mistaken for it) and the kernel's boot and pid namespace (so a
container that shares the host name, or a reboot, is not mistaken for this machine). Only
when all of that says "this machine" can the pid be looked up here; then a holder that is
gone (no such process, a zombie, or another process with that pid) is known dead at once,
without waiting out the claim's ttl. Anywhere else the answer is "unknown": the ttl decides.
Linux only (/proc); elsewhere a claim is never judged early.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

_PROC = Path("/proc")


@functools.cache
def machine() -> str | None:
    """This kernel boot and pid namespace: the scope in which a pid means one process."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot and namespace else None


def started(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot), or None when there is no live
    process of that pid (a zombie is not live) or it cannot be told."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # pid (comm) state ppid ... field 22 is the start time; comm may hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def this_process() -> str | None:
    return started(os.getpid())


def gone(host: str, namespace: str | None, pid: int, start: str | None) -> bool:
    """True when the holder named so ran on this machine and is no longer running. False when
    it still runs, or when that cannot be known here (another host, another container, no
    /proc, a claim that does not say when its process started)."""
    here = machine()
    if here is None or namespace != here or host != socket.gethostname() or pid <= 0 or start is None:
        return False
    return started(pid) != start

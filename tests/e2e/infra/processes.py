"""Starting and stopping the rig's host processes, and remembering them across invocations."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
_START = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr with wall-clock time and seconds since this process started."""
    now = time.strftime("%H:%M:%S")
    print(f"[{now} +{time.monotonic() - _START:6.1f}s] rig: {message}", file=sys.stderr, flush=True)


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen | None = None
    pid: int | None = None
    # The whole environment of the process; None: this process's own.
    env: Mapping[str, str] | None = None

    def start(self, *, die_with_parent: bool) -> None:
        """Starts in its own session (Ctrl-C of the test run must not hit it directly).

        die_with_parent: for the pytest fixture, where nothing may outlive the test run; the CLI's
        `up` leaves the rig running for later `down`.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        parent_pid = os.getpid()
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n==== {time.ctime()}: {' '.join(self.argv)}\n".encode())
            log_file.flush()
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: _die_with_parent(parent_pid)) if die_with_parent else None,
                env=None if self.env is None else dict(self.env),
            )
        self.pid = self.popen.pid

    def is_running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid is not None and pid_is_alive(self.pid, self.argv[0])

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        if self.pid is None:
            return
        stop_pid(self.pid, timeout=timeout, popen=self.popen, expected_exe=self.argv[0])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_is_alive(pid: int, expected_exe: str | None = None) -> bool:
    """True if PID runs (not a zombie) and, if given, its argv[0] is expected_exe.

    The argv check protects against pid reuse when acting on pids recorded earlier.
    """
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    if expected_exe is None:
        return True
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return argv0 == expected_exe


def stop_pid(
    pid: int,
    *,
    timeout: float = 10.0,
    popen: subprocess.Popen | None = None,
    expected_exe: str | None = None,
) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL; reaps it if it is our child."""
    if not pid_is_alive(pid, expected_exe):
        if popen is not None:
            popen.poll()
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return
        if not pid_is_alive(pid):
            return
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=10)
    else:
        deadline = time.monotonic() + 10
        while pid_is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class RigState:
    """What a running rig is made of, saved so another invocation (CLI `down`) can stop it."""

    # "fixture" (dies with the test run) or "cli" (left running by `up`).
    owner: str
    owner_pid: int
    processes: dict[str, dict] = field(default_factory=dict)  # name -> {pid, argv0}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RigState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def running_processes(self) -> dict[str, int]:
        return {
            name: entry["pid"]
            for name, entry in self.processes.items()
            if pid_is_alive(entry["pid"], entry["argv0"])
        }

    def owner_is_alive(self) -> bool:
        return pid_is_alive(self.owner_pid)

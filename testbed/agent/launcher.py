"""Run the agent in this process (``run``), or start it detached and wait until it is ready (``start``).

How ``testbed up`` (and ``testbed agent LAB --daemon``) starts it::

    pid = launcher.start(lab, timeout=60.0)

spawns ``python -m testbed agent LAB --foreground --ready-fd N`` in its own
session (stdin/stdout on /dev/null, stderr appended to ``agent.log``) and
blocks until the agent reports on the pipe ``N`` that its first full
reconcile of every NIC is done (then ``agent.json`` says ``"ready": true``),
or raises AgentError with the agent's own error, or WaitTimeout. Stop it
with SIGTERM to the pid in ``agent.pid`` (``teardown.stop_agent`` does):
it exits 0 and leaves the rules in place.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import Optional, TextIO

from testbed import labstore, pids
from testbed.agent.loop import Agent
from testbed.agent.report import Reporter
from testbed.errors import AgentError, ConflictError, TestbedError, WaitTimeout
from testbed.nl import TIMEOUT_SCALE_ENV, timeout_scale

PIDFILE = "agent.pid"


def _is_agent(pid: int, lab: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return b"agent" in argv and lab.encode() in argv


def running(lab: str) -> Optional[int]:
    """The pid of this lab's live agent, or None."""
    try:
        with open(labstore.lab_file(lab, PIDFILE)) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid > 0 and pid != os.getpid() and pids.alive(pid) and _is_agent(pid, lab):
        return pid
    return None


def _write_pidfile(lab: str, pid: int) -> None:
    path = labstore.lab_file(lab, PIDFILE)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(f"{pid}\n")
    os.replace(tmp, path)


def _claim_pidfile(lab: str) -> None:
    other = running(lab)  # never this process, which its starter may have recorded already
    if other is not None:
        raise ConflictError(f"lab {lab}: an agent is already running (pid {other})",
                            fix=f"stop it first: kill {other}  (SIGTERM; the rules stay in place)")
    _write_pidfile(lab, os.getpid())


def _release_pidfile(lab: str) -> None:
    path = labstore.lab_file(lab, PIDFILE)
    try:
        with open(path) as fh:
            mine = int(fh.read().strip() or 0) == os.getpid()
        if mine:
            os.unlink(path)
    except (OSError, ValueError):
        pass


def run(lab: str, *, json_log: bool = False, echo: Optional[TextIO] = None, ready_fd: Optional[int] = None) -> int:
    """The agent in this process, until SIGTERM (0) or an error (AgentError etc. propagate)."""
    labstore.read(lab)  # LabNotFound before anything else
    reporter = Reporter(lab, json_log=json_log, echo=echo)
    pending = [ready_fd] if ready_fd is not None else []

    def ready(error: Optional[str]) -> None:
        """Tell the starter (once) that the agent is ready, or why not."""
        if not pending:
            return
        fd = pending.pop()
        try:
            os.write(fd, (f"error: {error}\n" if error else "ready\n").encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    try:
        _claim_pidfile(lab)
    except TestbedError as exc:
        ready(str(exc))
        reporter.close()
        raise
    reporter.line(f"agent starting: lab {lab}, pid {os.getpid()}")
    try:
        return Agent(lab, reporter).run(ready=ready)
    except TestbedError as exc:
        reporter.error = str(exc)
        reporter.line(f"agent exiting: {exc}")
        ready(str(exc))
        raise
    except BaseException as exc:
        reporter.error = f"{type(exc).__name__}: {exc}"
        reporter.line("agent crashed:\n" + traceback.format_exc().rstrip())
        ready(reporter.error)
        raise
    finally:
        reporter.running = False
        try:
            if os.path.isdir(labstore.lab_dir(lab)):
                reporter.write_status([])
        except OSError:
            pass
        _release_pidfile(lab)
        reporter.close()


def agent_argv(lab: str, ready_fd: int, json_log: bool = False) -> list:
    argv = [sys.executable, "-m", "testbed", "agent", lab, "--foreground", "--ready-fd", str(ready_fd)]
    return argv + (["--json-log"] if json_log else [])


def start(lab: str, timeout: float = 60.0, *, json_log: bool = False) -> int:
    """Start the agent detached; return its pid once its first reconcile is done."""
    labstore.read(lab)
    other = running(lab)
    if other is not None:
        raise ConflictError(f"lab {lab}: an agent is already running (pid {other})",
                            fix=f"stop it first: kill {other}")
    r, w = os.pipe()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    os.makedirs(labstore.lab_dir(lab), exist_ok=True)
    with open(labstore.lab_file(lab, "agent.log"), "a") as log:
        try:
            proc = subprocess.Popen(agent_argv(lab, w, json_log), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log, pass_fds=(w,), env=env,
                                    start_new_session=True, close_fds=True)
        finally:
            os.close(w)
    _write_pidfile(lab, proc.pid)  # at once: if the starter dies now, `clean` still finds and stops the agent
    try:
        message = _wait_ready(r, proc, timeout, lab)
    finally:
        os.close(r)
    if message == "ready":
        return proc.pid
    proc.wait()
    raise AgentError(f"lab {lab}: the agent did not start: {message}",
                     fix=f"see {labstore.lab_file(lab, 'agent.log')}")


def _wait_ready(fd: int, proc: subprocess.Popen, timeout: float, lab: str) -> str:
    timeout *= timeout_scale()
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise WaitTimeout(f"lab {lab}: the agent's first reconcile did not finish within {timeout:g}s",
                              fix=f"see {labstore.lab_file(lab, 'agent.log')}; raise --agent-timeout on slow "
                                  f"machines (or every deadline with {TIMEOUT_SCALE_ENV}=2)")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # the agent closed the pipe without a word: it died
            code = proc.wait()
            text = buf.decode(errors="replace").strip()
            return text.removeprefix("error: ") if text else f"exited with status {code}"
        buf += chunk
        if b"\n" in buf:
            text = buf.split(b"\n", 1)[0].decode(errors="replace")
            return "ready" if text == "ready" else text.removeprefix("error: ")

"""What the agent tells the world: ``agent.log`` lines and ``agent.json`` (read back typed by ``agent.status``).

Both live beside the lab record (``labstore.lab_file(lab, ...)``).

``agent.log``: one line per reaction (and per start/stop), appended::

    2025-01-01T12:00:00.123 server: event (pf0,bond0): usable pf1; table 1xpf1: +1 ~5 -1 rules,
    event->applied 3.2 ms (apply 2.9 ms)

With ``--json-log`` each line is instead the reaction's JSON object (below).

``agent.json`` (rewritten atomically after every reaction)::

    {
      "lab": "ab", "pid": 4242, "started": "2025-01-01T12:00:00", "updated": "...",
      "ready": true,          # the first full reconcile of every NIC is done
      "running": true,        # false once the agent has exited
      "priority": "realtime (SCHED_FIFO 1) for reactions",   # or "normal (why)": agent.priority
      "error": null,          # why it exited, if it did on an error
      "nics": {
        "server": {
          "netns": "ab-server", "bond": "bond0", "bond_mode": "active-backup",
          "offload": "active-backup" | "hash" | "vf-split", "buckets": 16 (hash only),
          "ports": ["pf0", "pf1"],
          "state": "bond0 active-backup active=pf0; pf0 carrier=up bond=active mii=up; ...",
          "usable": ["pf0"],                       # ports carrying offloaded traffic
          "mapping": ["pf0", "pf1", ..., null],    # table entry (bucket) -> port; null = drop;
                                                   # active-backup: one entry, the active port
          "tx": {"vf0": [...], "rdma0": [...]},    # each function's entries (same table today)
          "rules": 25, "resyncs": 1,
          "fast": {"fast": 9, "precomputed": 8, "planned": 1, "read": 2,   # reactions per path
                   "verified": 9, "corrected": 0,          # verify dumps after fast reactions; fixes
                   "prepared": ["usable pf0 / receiving pf0", ...]},  # next states ready to send
          "reactions": [ REACTION, ... ]           # the last 20 of this NIC, oldest first
        }
      },
      "reactions": [ REACTION, ... ]               # the last 20 of all NICs, oldest first
    }

    REACTION = {"time": "...",       # when it finished (local time, for display)
                "done_ns": 1735732800123456789,  # the same, epoch ns (what readers compare)
                "host": "server",
                "trigger": "bond0,pf0" (interfaces in the events) | "start" | "SIGHUP" | "ENOBUFS: events lost",
                "full": false,       # true: a full resync (rules dumped and diffed)
                "state": "bond0 active-backup active=pf1; pf0 carrier=down ...",
                "usable": ["pf1"], "mapping": "usable pf1; table 1xpf1",
                "added": 1, "replaced": 5, "deleted": 1,
                "read_ms": 0.8,      # bond state read (a full resync: + clsact check and rule dump)
                "plan_ms": 0.3,      # rules computed and diffed
                "apply_ms": 2.9,     # the phased tc batches
                "latency_ms": 3.2,   # event read from the socket -> last rule applied
                "error": null,
                "path": "precomputed" | "planned" | "read" | "verify" | "full",
                    # precomputed: the change prepared for this state, one sendmsg, no dump;
                    # planned: the events' state was not foreseen, planned and sent the same way;
                    # read: the links dumped first (events not trusted, or a new interface);
                    # verify: the dump after a fast reaction found and fixed a wrong guess
                    #   (latency_ms still from the original event); full: a resync
                "text": "<the log line without the timestamp>"}
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, TextIO

from testbed import labstore
from testbed.agent.reconcile import NicReconciler, Reaction, stamp

KEEP = 20  # reactions kept per NIC and overall


def _now() -> str:
    return stamp(time.time())


class Reporter:
    def __init__(self, lab: str, *, json_log: bool = False, echo: Optional[TextIO] = None) -> None:
        self.lab = lab
        self.json_log = json_log
        self.echo = echo
        os.makedirs(labstore.lab_dir(lab), exist_ok=True)
        self.log_path = labstore.lab_file(lab, "agent.log")
        self.json_path = labstore.lab_file(lab, "agent.json")
        self.log: TextIO = open(self.log_path, "a", buffering=1)
        self.started = _now()
        self.ready = False
        self.running = True
        self.error: Optional[str] = None
        self.priority: Optional[str] = None  # agent.priority.Priority.describe()
        self.reactions: Deque[Dict[str, Any]] = deque(maxlen=KEEP)
        self.per_nic: Dict[str, Deque[Dict[str, Any]]] = {}

    def line(self, text: str, **extra: Any) -> None:
        """A log line that is not a reaction (start, stop, errors)."""
        if self.json_log:
            out = json.dumps({"time": _now(), "message": text, **extra})
        else:
            out = f"{_now()} {text}"
        self._write(out)

    def _write(self, out: str) -> None:
        self.log.write(out + "\n")
        if self.echo is not None:
            print(out, file=self.echo, flush=True)

    def reaction(self, r: Reaction) -> None:
        d = r.as_dict()
        self._write(json.dumps(d) if self.json_log else f"{d['time']} {d['text']}")
        self.reactions.append(d)
        self.per_nic.setdefault(r.host, deque(maxlen=KEEP)).append(d)

    def write_status(self, nics: List[NicReconciler], switches: Sequence[Any] = ()) -> None:
        """``agent.json``: the NICs' tables and reactions; ``switches`` (``agent.switch.SwitchReconciler``):
        the switch's resilient tables, under ``switches`` by NIC host."""
        data = {
            "lab": self.lab, "pid": os.getpid(), "started": self.started, "updated": _now(),
            "ready": self.ready, "running": self.running, "error": self.error, "priority": self.priority,
            "nics": {},
            "reactions": list(self.reactions),
        }
        for rec in nics:
            entry = rec.status()
            entry["reactions"] = list(self.per_nic.get(rec.host.name, ()))
            data["nics"][rec.host.name] = entry
        if switches:
            data["switches"] = {sw.host.name: sw.status() for sw in switches}
        fd, tmp = tempfile.mkstemp(dir=labstore.lab_dir(self.lab), prefix=".agent.")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1)
            os.replace(tmp, self.json_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def close(self) -> None:
        self.log.close()


def stderr_echo(enabled: bool) -> Optional[TextIO]:
    return sys.stderr if enabled else None

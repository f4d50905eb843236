"""The record a lab keeps under ``/run/testbed/<lab>/``: what it owns, so ``down`` and ``clean`` never guess.

``lab.json`` is written *before* the first namespace is created and updated as
objects come into existence, so a crash at any point leaves a record that
``testbed clean`` can act on. Files beside it: ``agent.pid``, ``agent.json``
(the agent's mapping tables and last reactions), ``agent.log``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

from testbed import pids
from testbed.errors import LabNotFound
from testbed.topology import Topology

RUN_DIR = os.environ.get("TESTBED_RUN_DIR", "/run/testbed")


def lab_dir(lab: str) -> str:
    return os.path.join(RUN_DIR, lab)


def lab_file(lab: str, name: str) -> str:
    return os.path.join(lab_dir(lab), name)


@dataclass
class LabRecord:
    name: str
    file: str
    topology: dict  # the raw, validated topology data (rebuild the model with ``model()``)
    state: str = "building"  # building | up | removing
    netns: List[str] = field(default_factory=list)  # namespaces created so far, in order
    pid: int = 0  # the process that built it
    agent: bool = True
    holder: int = 0  # a process the lab lives and dies with (a Mininet session's); 0: none
    agent_ready_s: Optional[float] = None  # agent started -> its first reconcile done, as its starter saw it

    def model(self) -> Topology:
        from testbed.loader import build_model

        return build_model(self.topology, self.file, lab_name=self.name)


def write(rec: LabRecord) -> None:
    os.makedirs(lab_dir(rec.name), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=lab_dir(rec.name), prefix=".lab.")
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(rec), fh, indent=1)
    os.replace(tmp, lab_file(rec.name, "lab.json"))


def read(lab: str) -> LabRecord:
    try:
        with open(lab_file(lab, "lab.json")) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise LabNotFound(f"lab {lab!r}: no such lab on this machine", fix="see `testbed list`") from None
    except (OSError, ValueError) as exc:
        raise LabNotFound(f"lab {lab!r}: record {lab_file(lab, 'lab.json')} unreadable: {exc}",
                          fix=f"`testbed clean --lab {lab}`") from None
    known = {f.name for f in fields(LabRecord)}
    return LabRecord(**{k: v for k, v in data.items() if k in known})


def try_read(lab: str) -> Optional[LabRecord]:
    try:
        return read(lab)
    except LabNotFound:
        return None


def names() -> List[str]:
    try:
        return sorted(d for d in os.listdir(RUN_DIR) if os.path.isfile(lab_file(d, "lab.json")))
    except FileNotFoundError:
        return []


def held_elsewhere(rec: LabRecord) -> bool:
    """The lab lives in another live process (a Mininet session) that removes it itself."""
    return bool(rec.holder) and rec.holder != os.getpid() and pids.alive(rec.holder)


def crashed(rec: LabRecord) -> bool:
    """What ``clean`` removes without ``--all``: a removal that was interrupted, a build whose builder is
    gone, a lab whose holding process (a Mininet session) is gone."""
    if rec.state == "removing":
        return True
    if rec.state == "building" and not pids.alive(rec.pid):
        return True
    return bool(rec.holder) and not pids.alive(rec.holder)


def remove(lab: str) -> None:
    d = lab_dir(lab)
    if not os.path.isdir(d):
        return
    for entry in os.listdir(d):
        os.unlink(os.path.join(d, entry))
    os.rmdir(d)

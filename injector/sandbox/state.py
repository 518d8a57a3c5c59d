"""The sandbox's state directory: the one place a sandbox is written down.

Layout (all JSON written atomically, by rename)::

    plan.json        the injected pods and Services (written by ``up`` before anything starts)
    owner.json       the supervisor's pid and start time (so a recycled pid is never signalled)
    resources.json   the journal: every namespace and hosts directory, recorded BEFORE it is
                     created, so whatever a crash leaves behind, ``down`` knows its name
    status.json      the supervisor's view of every container: state, pid, restarts, exit code
    logs/POD/CONTAINER.log, supervisor.log

The default directory is ``/run/meshinject-sandbox``: ``/run`` is a tmpfs, emptied at boot like
the namespaces it describes; ``--state-dir`` or ``MESHINJECT_SANDBOX_DIR`` choose another.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from injector.sandbox.model import SandboxPlan

DEFAULT_DIR = "/run/meshinject-sandbox"


def default_dir() -> Path:
    return Path(os.environ.get("MESHINJECT_SANDBOX_DIR") or DEFAULT_DIR)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or
    None when it is gone. A zombie counts as gone: the supervisor is the CLI's child, and stays
    a zombie until the CLI reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def same_process(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the process recorded with ``started`` (not a recycled pid)."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def exists(self) -> bool:
        return self.plan_path.exists() or (self.root / "resources.json").exists()

    def create(self, plan: SandboxPlan) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.plan_path.write_text(plan.model_dump_json(indent=1))

    def plan(self) -> SandboxPlan:
        return SandboxPlan.model_validate_json(self.plan_path.read_text())

    def log_path(self, pod: str, container: str) -> Path:
        return self.root / "logs" / pod / f"{container}.log"

    # --- the supervisor -------------------------------------------------------------------
    def record_owner(self, pid: int) -> None:
        write_json(self.root / "owner.json", {"pid": pid, "start": start_time(pid)})

    def owner(self) -> tuple[int, int | None] | None:
        data = read_json(self.root / "owner.json")
        return (int(data["pid"]), data.get("start")) if data else None

    # --- the journal ----------------------------------------------------------------------
    def resources(self) -> dict[str, list[str]]:
        data = read_json(self.root / "resources.json", {})
        return {"namespaces": list(data.get("namespaces", [])),
                "hosts_dirs": list(data.get("hosts_dirs", [])),
                "mount_dirs": list(data.get("mount_dirs", []))}

    def record(self, *, namespace: str | None = None, hosts_dir: str | None = None,
               mount_dir: str | None = None) -> None:
        """Write a resource down before it is created (the journal only grows); a mount dir
        is an empty directory made on the host so a volume can be bound onto it."""
        data = self.resources()
        for key, value in (("namespaces", namespace), ("hosts_dirs", hosts_dir),
                           ("mount_dirs", mount_dir)):
            if value is not None and value not in data[key]:
                data[key].append(value)
        write_json(self.root / "resources.json", data)

    # --- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = read_json(self.root / "status.json", {})
        return data

    def write_status(self, status: dict[str, Any]) -> None:
        write_json(self.root / "status.json", status)

    def remove(self) -> None:
        """Delete the directory (after ``down`` removed what it describes)."""
        for path in sorted(self.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        with contextlib.suppress(OSError):
            self.root.rmdir()

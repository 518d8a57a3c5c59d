"""What a cluster made, written down before it is made, so that ``down`` can undo every bit.

The journal is ``STATE/journal.jsonl``, one JSON object a line, appended and fsynced:

- ``{"op": "begin", "id": ...}``        first line; the id ties processes to this cluster;
- ``{"op": "path", "path": ...}``       before a file or directory is created;
- ``{"op": "spawn", "name", "tag"}``    before a process is started; ``{"op": "pid", "tag",
  "pid", "start"}`` right after, with its start time (clock ticks since boot, from
  ``/proc/PID/stat``), and ``{"op": "stopped", "tag"}`` once it has been stopped;
- ``{"op": "undo", "argv": [...]}``     a command ``down`` runs to remove something outside the
  state directory (a node agent's network namespace, say), before anything is made.

Processes are stopped by PID only, and only when the PID still is that process: same start
time, and the tag this journal gave it (``MESHINJECT_CLUSTER_TAG`` in its environment). A
process whose PID never reached the journal (``up`` killed between fork and write) is found by
that exact tag in ``/proc/*/environ``, which only a process started by this journal carries.
Standard library only: stopping a cluster must not need the venv.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TAG_VAR = "MESHINJECT_CLUSTER_TAG"
JOURNAL = "journal.jsonl"


@dataclass
class Proc:
    """One process start as the journal has it."""

    name: str
    tag: str
    log: str
    pid: int | None = None
    start: int | None = None
    stopped: bool = False


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the parenthesised command, which may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if fields[0] != "Z" else None  # a zombie has already exited


def _has_tag(pid: int, tag: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TAG_VAR}={tag}".encode() in environ.split(b"\0")


def is_running(proc: Proc) -> bool:
    """The journal's process is alive under its PID: same start time, same tag."""
    if proc.pid is None or proc.stopped:
        return False
    return start_time(proc.pid) == proc.start and _has_tag(proc.pid, proc.tag)


def find_by_tag(tag: str) -> list[int]:
    """PIDs whose environment carries exactly this tag (a start whose PID was never written)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _has_tag(int(entry.name), tag):
            found.append(int(entry.name))
    return found


def _gone(pid: int, start: int | None) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child stays a zombie until reaped
        os.waitpid(pid, os.WNOHANG)
    return start_time(pid) != start


def terminate(pid: int, *, start: int | None, grace: float = 10.0) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns how it ended."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _gone(pid, start):
            return "stopped"
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    for _ in range(100):
        if _gone(pid, start):
            break
        time.sleep(0.05)
    return f"killed after {grace:g} s"


class Journal:
    """The state directory's journal; every writer holds its lock (see :meth:`locked`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / JOURNAL
        self._entries: list[dict[str, Any]] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def locked(self) -> Iterator[Journal]:
        """Hold an exclusive lock on the journal for the whole command (one ``up`` at a time)."""
        made = not self.state_dir.exists()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        handle: IO[str] = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if fresh:
                self.write("begin", id=uuid.uuid4().hex[:12], made_dir=made, time=time.time())
            yield self
        finally:
            handle.close()

    def write(self, op: str, **fields: Any) -> None:
        line = json.dumps({"op": op, **fields}, sort_keys=True)
        with self.path.open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        self._entries = None

    def entries(self) -> list[dict[str, Any]]:
        if self._entries is None:
            text = self.path.read_text() if self.path.exists() else ""
            self._entries = []
            for line in text.splitlines():
                try:
                    self._entries.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash: what it announced was not made
        return self._entries

    @property
    def cluster_id(self) -> str:
        return str(self.entries()[0]["id"])

    # -- what was made ---------------------------------------------------------------------
    def make_dir(self, path: Path) -> Path:
        self.write("path", path=str(path))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_file(self, path: Path, data: bytes | str, *, mode: int = 0o644) -> Path:
        """Journal, then write ``path`` (a file directly in the state dir, or in a new dir)."""
        if not any(str(path).startswith(p + os.sep) or str(path) == p for p in self.paths()):
            self.write("path", path=str(path))
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.chmod(path, mode)
        return path

    def paths(self) -> list[str]:
        return [e["path"] for e in self.entries() if e["op"] == "path"]

    def undo_commands(self) -> list[list[str]]:
        return [list(e["argv"]) for e in self.entries() if e["op"] == "undo"]

    def processes(self) -> list[Proc]:
        """Every start, in order; a name started twice (a restart) appears twice."""
        by_tag: dict[str, Proc] = {}
        for e in self.entries():
            if e["op"] == "spawn":
                by_tag[e["tag"]] = Proc(e["name"], e["tag"], e.get("log", ""))
            elif e["op"] == "pid" and e["tag"] in by_tag:
                by_tag[e["tag"]].pid, by_tag[e["tag"]].start = e["pid"], e["start"]
            elif e["op"] == "stopped" and e["tag"] in by_tag:
                by_tag[e["tag"]].stopped = True
        return list(by_tag.values())

    def running(self, name: str) -> Proc | None:
        """The live process of that name, if any."""
        live = [p for p in self.processes() if p.name == name and is_running(p)]
        return live[-1] if live else None

    # -- starting and stopping -------------------------------------------------------------
    def spawn(
        self, name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> Proc:
        """Start a daemon in a session of its own (a Ctrl-C on ``up`` does not reach it)."""
        tag = f"{self.cluster_id}/{name}/{uuid.uuid4().hex[:8]}"
        self.write("spawn", name=name, tag=tag, argv=list(argv), log=str(log))
        environ = {**(os.environ if env is None else env), TAG_VAR: tag}
        with log.open("ab") as out:
            child = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=environ, start_new_session=True, close_fds=True,
            )
        start = start_time(child.pid)
        self.write("pid", tag=tag, pid=child.pid, start=start)
        child.returncode = 0  # it outlives us: keep Popen.__del__ from warning about it
        return Proc(name, tag, str(log), child.pid, start)

    def stop(self, proc: Proc, *, grace: float = 10.0) -> str:
        """Stop one start by PID (checked to still be it); the journal records it."""
        if proc.stopped:
            return "stopped earlier"
        if proc.pid is None:
            pids = find_by_tag(proc.tag)
            how = ", ".join(
                f"{pid}: {terminate(pid, start=start_time(pid), grace=grace)}" for pid in pids
            )
            result = f"PID never journaled; found by its tag: {how}" if pids else "never started"
        elif is_running(proc):
            result = terminate(proc.pid, start=proc.start, grace=grace)
        else:
            result = "was not running"
        self.write("stopped", tag=proc.tag, how=result)
        return result

    def remove_everything(self) -> list[str]:
        """After every process is stopped: undo commands, then paths, newest first; then the
        journal, and the state directory if this journal made it and nothing else is left."""
        done = []
        for argv in reversed(self.undo_commands()):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            done.append(f"ran {' '.join(argv)} (exit {proc.returncode})")
        for path in reversed(self.paths()):
            target = Path(path)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
                done.append(f"removed {target}/")
            elif target.exists() or target.is_symlink():
                target.unlink()
                done.append(f"removed {target}")
        made_dir = bool(self.entries() and self.entries()[0].get("made_dir"))
        self.path.unlink(missing_ok=True)
        self._entries = None
        if made_dir:
            try:
                self.state_dir.rmdir()
                done.append(f"removed {self.state_dir}/")
            except OSError:
                done.append(f"kept {self.state_dir}/: it holds files this cluster did not make")
        return done

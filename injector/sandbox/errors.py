"""The sandbox's one error: something in the manifest or on this machine stops a run.

The message names the pod, the container and the value, so the user can fix the manifest;
the CLI prints it and exits non-zero before anything starts.
"""

from __future__ import annotations


class SandboxError(RuntimeError):
    """The sandbox cannot run (or stop) what it was asked to; the message says why."""

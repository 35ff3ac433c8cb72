"""launchd user agent (macOS): the plist, the ``launchctl`` commands, and reading them back.

Pure: nothing here touches the file system or runs a process. The plist has the shape
``brew services`` writes for a formula's ``service do`` block (see ``packaging/homebrew``), so
both tools produce the same kind of agent.
"""

import os
import plistlib
import re
from pathlib import Path
from typing import Optional

from mlxserve.service_mgr.spec import ServiceSpec

DEFAULT_LABEL = "com.mlxserve.server"

# Homebrew writes this list so the agent loads in any session, an SSH login included.
SESSION_TYPES = ["Aqua", "Background", "LoginWindow", "StandardIO", "System"]


def plist_path(label: str) -> Path:
    """Where the agent's plist lives; launchd loads every plist there at login."""
    return Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"


def log_path() -> Path:
    """The log file (stdout and stderr) of the agent."""
    return Path.home() / "Library" / "Logs" / "mlxserve" / "mlxserve.log"


def render_plist(spec: ServiceSpec) -> bytes:
    """The agent's plist as XML bytes, built with ``plistlib`` so every value is escaped."""
    plist = {
        "Label": spec.label,
        "ProgramArguments": list(spec.argv),
        "RunAtLoad": True,
        # Restart after a crash, not after a clean exit: SIGTERM drains requests and exits 0.
        "KeepAlive": {"SuccessfulExit": False},
        "WorkingDirectory": str(spec.working_dir),
        "StandardOutPath": str(spec.log_path),
        "StandardErrorPath": str(spec.log_path),
        "EnvironmentVariables": dict(spec.environment),
        # Background process types get throttled CPU and I/O; this one answers a user.
        "ProcessType": "Interactive",
        # launchd sends SIGKILL 20 s after SIGTERM by default, before a drain may have ended.
        "ExitTimeOut": spec.stop_timeout,
        "LimitLoadToSessionType": SESSION_TYPES,
    }
    # Insertion order (Label first) reads like the plists Homebrew writes.
    return plistlib.dumps(plist, sort_keys=False)


def program_arguments(plist: bytes) -> list[str]:
    """The command line of an installed plist."""
    return list(plistlib.loads(plist)["ProgramArguments"])


def domain() -> str:
    """The launchd domain of the logged-in user's GUI session."""
    return f"gui/{os.getuid()}"


def target(label: str) -> str:
    """The service target, ``gui/<uid>/<label>``."""
    return f"{domain()}/{label}"


def print_argv(label: str) -> list[str]:
    """Succeeds (rc 0) only when the agent is loaded; its output holds the pid."""
    return ["launchctl", "print", target(label)]


def bootstrap_argv(path: Path) -> list[str]:
    """Loads the agent (and, with RunAtLoad, starts it)."""
    return ["launchctl", "bootstrap", domain(), str(path)]


def bootout_argv(label: str) -> list[str]:
    """Stops (SIGTERM, then SIGKILL after ExitTimeOut) and unloads the agent."""
    return ["launchctl", "bootout", target(label)]


def kickstart_argv(label: str) -> list[str]:
    """Starts a loaded agent that is not running (a running one is left alone)."""
    return ["launchctl", "kickstart", target(label)]


def parse_print(output: str) -> tuple[Optional[int], str]:
    """The pid (None when not running) and the ``state`` from ``launchctl print`` output."""
    pid = re.search(r"^\s*pid = (\d+)\s*$", output, re.MULTILINE)
    state = re.search(r"^\s*state = (.+?)\s*$", output, re.MULTILINE)
    return (int(pid.group(1)) if pid else None, state.group(1) if state else "unknown")

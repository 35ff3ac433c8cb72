"""systemd user unit (Linux): the unit file, the ``systemctl --user`` commands, reading them back.

Pure: nothing here touches the file system or runs a process. Logs go to a plain file with
``StandardOutput=append:`` rather than the journal, so ``mlxserve service logs`` reads the same
kind of file on Linux as on macOS, and works where the user cannot read the journal.
"""

import os
import re
import shlex
from pathlib import Path
from typing import Optional

from mlxserve.service_mgr.spec import ServiceSpec

UNIT = "mlxserve.service"

# Words that need no quoting in a unit file; anything else is double-quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def _xdg_dir(variable: str, default: str) -> Path:
    """An XDG base directory; relative values are invalid per the spec and ignored."""
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / default


def unit_path() -> Path:
    """Where the unit lives: the first directory ``systemd --user`` searches for user units."""
    return _xdg_dir("XDG_CONFIG_HOME", ".config") / "systemd" / "user" / UNIT


def log_path() -> Path:
    """The log file (stdout and stderr) of the service."""
    return _xdg_dir("XDG_STATE_HOME", ".local/state") / "mlxserve" / "mlxserve.log"


def _escape_specifiers(text: str) -> str:
    """systemd expands ``%x`` specifiers in most settings; ``%%`` is a literal ``%``."""
    return text.replace("%", "%%")


def quote(word: str, expand_env: bool = True) -> str:
    """One word of a command line or ``Environment=`` as systemd reads it back verbatim.

    Args:
        word: the literal text.
        expand_env: True for ``ExecStart=``, where ``$NAME`` is expanded, so ``$`` is doubled.

    Returns:
        The word, double-quoted with ``\\`` and ``"`` escaped unless it is plainly safe.
    """
    if "\n" in word:
        raise ValueError(f"a newline cannot be written into a systemd unit: {word!r}")
    if expand_env:
        word = word.replace("$", "$$")
    word = _escape_specifiers(word)
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_command(line: str) -> list[str]:
    """The words of an ``ExecStart=`` value written by :func:`quote` (its inverse)."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text."""
    sections = {
        "Unit": [
            ("Description", "mlxserve: local OpenAI-compatible LLM server"),
            ("After", "network.target"),
        ],
        "Service": [
            ("Type", "simple"),
            ("ExecStart", " ".join(quote(w) for w in spec.argv)),
            # Paths take the rest of the line verbatim (no quotes), only specifiers expand.
            ("WorkingDirectory", _escape_specifiers(str(spec.working_dir))),
            *[
                ("Environment", quote(f"{k}={v}", expand_env=False))
                for k, v in spec.environment.items()
            ],
            # Restart after a crash, not after a clean exit: SIGTERM drains requests and exits 0.
            ("Restart", "on-failure"),
            ("TimeoutStopSec", str(spec.stop_timeout)),
            ("StandardOutput", "append:" + _escape_specifiers(str(spec.log_path))),
            ("StandardError", "append:" + _escape_specifiers(str(spec.log_path))),
        ],
        "Install": [("WantedBy", "default.target")],
    }
    lines = ["# Written by `mlxserve service install`; `mlxserve service uninstall` removes it."]
    for section, entries in sections.items():
        lines += ["", f"[{section}]"] + [f"{key}={value}" for key, value in entries]
    return "\n".join(lines) + "\n"


def exec_start(unit_text: str) -> list[str]:
    """The command line of an installed unit."""
    match = re.search(r"^ExecStart=(.*)$", unit_text, re.MULTILINE)
    if match is None:
        raise ValueError("the unit has no ExecStart= line")
    return split_command(match.group(1))


def systemctl(*args: str) -> list[str]:
    """A ``systemctl --user`` command line."""
    return ["systemctl", "--user", *args]


SHOW_PROPERTIES = "LoadState,ActiveState,SubState,MainPID"


def parse_show(output: str) -> tuple[bool, Optional[int], str]:
    """Loaded?, the main pid (None if not running) and ``active (sub)`` from ``systemctl show``."""
    props = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    pid = int(props.get("MainPID", "0") or 0)
    state = f"{props.get('ActiveState', 'unknown')} ({props.get('SubState', 'unknown')})"
    return props.get("LoadState") == "loaded", pid or None, state

"""What the service runs, independent of launchd or systemd.

The service runs the *installed* ``mlxserve`` executable by absolute path (launchd and systemd
do not search the user's shell PATH) with ``serve`` and only the flags the user gave, so the
config file and the defaults still apply to everything else.
"""

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlxserve.config import CONFIG_ENV, Settings

# Seconds the supervisor waits after SIGTERM beyond drain_timeout before it sends SIGKILL.
STOP_GRACE_SECONDS = 10

# Searched after the executable's own folder; launchd starts agents with a bare PATH.
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")

# Path variables copied (made absolute) from the installing shell into the service when set.
PASSED_ENV = ("HF_HOME", CONFIG_ENV)


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a unit file says; ``launchd.render_plist``/``systemd.render_unit`` render it."""

    label: str
    """launchd label (the systemd unit name is fixed)."""
    argv: tuple[str, ...]
    """Absolute executable, ``serve``, then the given serve flags."""
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: Path = Path("/")
    log_path: Path = Path("/dev/null")
    """stdout and stderr both go here, like Homebrew's ``log_path`` + ``error_log_path``."""
    stop_timeout: int = 30 + STOP_GRACE_SECONDS
    """Seconds from SIGTERM to SIGKILL: the server's drain time plus a margin."""


def executable() -> list[str]:
    """The absolute command that runs this installation of mlxserve."""
    # The script beside the running interpreter is this install (a venv or Homebrew's libexec);
    # `which` could find a different mlxserve earlier on PATH.
    beside = Path(sys.executable).parent / "mlxserve"
    if beside.is_file():
        return [os.path.abspath(beside)]
    found = shutil.which("mlxserve")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "mlxserve"]


def serve_flags(values: Mapping[str, Any]) -> list[str]:
    """``--flag value`` pairs for the given settings, in the order Settings declares them.

    A ``--model`` that names an existing local folder is made absolute, because the service
    runs from another working directory.
    """
    argv = []
    for name in Settings.model_fields:
        if name not in values:
            continue
        value = values[name]
        if name == "model" and Path(value).expanduser().exists():
            value = os.path.abspath(Path(value).expanduser())
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):  # a switch: --flag or --no-flag
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def build_spec(
    values: Mapping[str, Any], label: str, log_path: Path, environ: Mapping[str, str] = os.environ
) -> ServiceSpec:
    """The service for ``mlxserve serve`` with the given flag values.

    Args:
        values: serve settings the user gave as flags (field name -> value).
        label: the launchd label.
        log_path: where stdout and stderr go (platform-specific).
        environ: the installing environment, for PATH and the variables in ``PASSED_ENV``.

    Returns:
        The spec. Raises pydantic's ``ValidationError`` or ``ConfigFileError`` for bad settings,
        so a broken service is never installed.
    """
    settings = Settings(**values)
    argv = executable()
    bin_dir = str(Path(argv[0]).parent)
    env = {"PATH": os.pathsep.join([bin_dir] + [p for p in SYSTEM_PATH if p != bin_dir])}
    env.update(
        {k: os.path.abspath(os.path.expanduser(environ[k])) for k in PASSED_ENV if environ.get(k)}
    )
    return ServiceSpec(
        label=label,
        argv=tuple(argv + ["serve"] + serve_flags(values)),
        environment=env,
        working_dir=Path.home(),
        log_path=log_path,
        stop_timeout=int(settings.drain_timeout) + STOP_GRACE_SECONDS,
    )

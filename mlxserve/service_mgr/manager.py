"""Side effects of ``mlxserve service``: write or remove the unit file and run the commands.

Every ``launchctl`` / ``systemctl`` call goes through the injected :class:`Runner`; the file
contents come from the pure ``launchd`` / ``systemd`` modules.
"""

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from mlxserve.service_mgr import launchd, systemd
from mlxserve.service_mgr.runner import Runner
from mlxserve.service_mgr.spec import build_spec


class ServiceError(Exception):
    """A service action failed; the message names the command and what it printed."""


@dataclass(frozen=True)
class ServiceStatus:
    """What launchd/systemd know about the service (the health probe is separate)."""

    path: Path
    installed: bool
    loaded: bool
    pid: Optional[int]
    state: str


class _Backend:
    """Shared plumbing of the two supervisors: run a command, fail loudly when it fails."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def _run(self, argv: list[str]) -> None:
        result = self.runner.run(argv)
        if result.returncode != 0:
            output = (result.stderr or result.stdout or "").strip()
            raise ServiceError(f"`{shlex.join(argv)}` failed (exit {result.returncode}): {output}")

    def _succeeds(self, argv: list[str]) -> bool:
        return self.runner.run(argv).returncode == 0


class _Launchd(_Backend):
    """A launchd agent ``label`` in the user's ``gui/<uid>`` domain."""

    def __init__(self, runner: Runner, label: str):
        super().__init__(runner)
        self.label = label
        self.path = launchd.plist_path(label)
        self.log_path = launchd.log_path()

    render = staticmethod(launchd.render_plist)
    command_line = staticmethod(launchd.program_arguments)

    def _loaded(self) -> bool:
        return self._succeeds(launchd.print_argv(self.label))

    def activate(self) -> None:
        # bootstrap refuses a label that is already loaded, and would keep the old arguments.
        if self._loaded():
            self._run(launchd.bootout_argv(self.label))
        self._run(launchd.bootstrap_argv(self.path))

    def deactivate(self) -> None:
        if self._loaded():
            self._run(launchd.bootout_argv(self.label))

    def after_remove(self) -> None:
        """launchd forgets an agent on bootout; nothing is cached to refresh."""

    def start(self) -> None:
        # A stopped agent was booted out (unloaded), so it is loaded again; RunAtLoad starts it.
        if self._loaded():
            self._run(launchd.kickstart_argv(self.label))
        else:
            self._run(launchd.bootstrap_argv(self.path))

    stop = deactivate

    def query(self) -> tuple[bool, Optional[int], str]:
        result = self.runner.run(launchd.print_argv(self.label))
        if result.returncode != 0:
            return False, None, "not loaded"
        pid, state = launchd.parse_print(result.stdout)
        return True, pid, state


class _Systemd(_Backend):
    """The systemd user unit ``mlxserve.service``."""

    def __init__(self, runner: Runner):
        super().__init__(runner)
        self.path = systemd.unit_path()
        self.log_path = systemd.log_path()

    @staticmethod
    def render(spec) -> bytes:
        return systemd.render_unit(spec).encode()

    @staticmethod
    def command_line(data: bytes) -> list[str]:
        return systemd.exec_start(data.decode())

    def activate(self) -> None:
        # `enable --now` leaves a running service alone, which would keep the old command line.
        if self._succeeds(systemd.systemctl("is-active", "--quiet", systemd.UNIT)):
            self._run(systemd.systemctl("stop", systemd.UNIT))
        self._run(systemd.systemctl("daemon-reload"))
        self._run(systemd.systemctl("enable", "--now", systemd.UNIT))

    def deactivate(self) -> None:
        self._run(systemd.systemctl("disable", "--now", systemd.UNIT))

    def after_remove(self) -> None:
        self._run(systemd.systemctl("daemon-reload"))

    def start(self) -> None:
        self._run(systemd.systemctl("start", systemd.UNIT))

    def stop(self) -> None:
        self._run(systemd.systemctl("stop", systemd.UNIT))

    def query(self) -> tuple[bool, Optional[int], str]:
        argv = systemd.systemctl("show", systemd.UNIT, "--property=" + systemd.SHOW_PROPERTIES)
        result = self.runner.run(argv)
        if result.returncode != 0:
            return False, None, f"unknown ({(result.stderr or '').strip() or 'systemctl failed'})"
        return systemd.parse_show(result.stdout)


class ServiceManager:
    """Install, remove, start, stop and inspect the per-user mlxserve service.

    Args:
        platform: ``sys.platform``-style name choosing the supervisor: ``darwin`` (launchd) or
            ``linux`` (systemd). Defaults to this machine's; tests and ``service print`` set it.
        runner: runs ``launchctl`` / ``systemctl``; tests pass a recording one.
        label: the launchd label (the systemd unit is always ``mlxserve.service``).
    """

    def __init__(
        self,
        platform: Optional[str] = None,
        runner: Optional[Runner] = None,
        label: str = launchd.DEFAULT_LABEL,
    ):
        platform = platform or sys.platform
        runner = runner or Runner()
        if platform == "darwin":
            self.backend = _Launchd(runner, label)
        elif platform.startswith("linux"):
            self.backend = _Systemd(runner)
        else:
            raise ServiceError(f"services need macOS (launchd) or Linux (systemd), not {platform}")
        self.label = label

    @property
    def path(self) -> Path:
        """The plist or unit file."""
        return self.backend.path

    @property
    def log_path(self) -> Path:
        """The file the service's stdout and stderr are appended to."""
        return self.backend.log_path

    def render(self, values: Mapping[str, Any]) -> bytes:
        """The file :meth:`install` would write for these serve flag values (changes nothing)."""
        return self.backend.render(build_spec(values, self.label, self.log_path))

    def install(self, values: Mapping[str, Any]) -> Path:
        """Write the file and (re)load the service, which starts it now and at every login.

        Returns:
            The path written.
        """
        data = self.render(values)  # validates the settings before anything is written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Neither launchd nor systemd creates the log file's folder.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)
        try:
            self.backend.activate()
        except ServiceError as exc:
            raise ServiceError(f"wrote {self.path}, but could not load it: {exc}") from exc
        return self.path

    def _require_installed(self) -> None:
        if not self.path.is_file():
            raise ServiceError(
                f"not installed ({self.path} does not exist); run: mlxserve service install"
            )

    def uninstall(self) -> Path:
        """Stop the service, unload it and remove its file; returns the path removed."""
        self._require_installed()
        self.backend.deactivate()
        self.path.unlink()
        self.backend.after_remove()
        return self.path

    def start(self) -> None:
        """Start the installed service."""
        self._require_installed()
        self.backend.start()

    def stop(self) -> None:
        """Stop the service (it drains in-flight requests); it starts again at the next login."""
        self._require_installed()
        self.backend.stop()

    def status(self) -> ServiceStatus:
        """Whether the file exists and what the supervisor says (loaded, pid, state)."""
        loaded, pid, state = self.backend.query()
        return ServiceStatus(self.path, self.path.is_file(), loaded, pid, state)

    def installed_flags(self) -> list[str]:
        """The serve flags in the installed file's command line ([] when not installed)."""
        if not self.path.is_file():
            return []
        try:
            argv = self.backend.command_line(self.path.read_bytes())
            return argv[argv.index("serve") + 1 :]
        except (ValueError, KeyError) as exc:  # hand-edited or damaged file
            raise ServiceError(f"cannot read the command line in {self.path}: {exc}") from exc

"""``mlxserve service install|uninstall|start|stop|status|logs|print``.

The serve flags come from the same ``add_settings_flags`` as ``mlxserve serve``; only the flags
the user actually gave are written into the service's command line, so the config file and
the defaults still decide the rest.
"""

import argparse
import sys
from typing import Callable

from pydantic import ValidationError

from mlxserve.config import ConfigFileError, Settings
from mlxserve.service_mgr import health, logs
from mlxserve.service_mgr.launchd import DEFAULT_LABEL
from mlxserve.service_mgr.manager import ServiceError, ServiceManager

# Exit status of `status` when the server is not up: systemctl's and LSB's "not running".
NOT_RUNNING = 3


def add_service_commands(
    parser: argparse.ArgumentParser, add_settings_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the sub-subcommands to the ``service`` parser.

    Args:
        parser: the ``mlxserve service`` parser.
        add_settings_flags: ``cli.add_settings_flags``, passed in to avoid an import cycle.
    """
    commands = parser.add_subparsers(dest="service_command", required=True)
    install = commands.add_parser(
        "install", help="Write the launchd agent / systemd user unit; start it now and at login."
    )
    add_settings_flags(install)
    commands.add_parser("uninstall", help="Stop the service and remove its file.")
    commands.add_parser("start", help="Start the installed service.")
    commands.add_parser("stop", help="Stop the service (it starts again at the next login).")
    status = commands.add_parser(
        "status", help="Is it loaded, its pid, and is its port answering /healthz? (exit 3: not up)"
    )
    # Reads the serve flags back out of the installed command line to find the port.
    installed_flags = argparse.ArgumentParser(prog="installed command line", add_help=False)
    add_settings_flags(installed_flags)
    status.set_defaults(flags_parser=installed_flags)
    log = commands.add_parser("logs", help="Print the end of the service's log file.")
    log.add_argument("-f", "--follow", action="store_true", help="Keep printing new lines.")
    log.add_argument("-n", "--lines", type=int, default=50, help="Lines to print (default: 50).")
    show = commands.add_parser(
        "print", help="Print the file `install` would write (changes nothing)."
    )
    kind = show.add_mutually_exclusive_group()
    kind.add_argument(
        "--launchd",
        dest="platform",
        action="store_const",
        const="darwin",
        help="The macOS launchd agent plist (default on macOS).",
    )
    kind.add_argument(
        "--systemd",
        dest="platform",
        action="store_const",
        const="linux",
        help="The systemd user unit (default on Linux).",
    )
    add_settings_flags(show)
    for sub in commands.choices.values():
        sub.add_argument(
            "--label",
            default=DEFAULT_LABEL,
            help=f"launchd label (default: {DEFAULT_LABEL}); the systemd unit is mlxserve.service.",
        )


def _given(args: argparse.Namespace) -> dict:
    """The serve settings given as flags (unset flags are absent: argparse.SUPPRESS)."""
    return {k: v for k, v in vars(args).items() if k in Settings.model_fields}


def _install(args: argparse.Namespace) -> int:
    manager = ServiceManager(label=args.label)
    path = manager.install(_given(args))
    print(f"installed {path}\nlogs: {manager.log_path}\ncheck: mlxserve service status")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    print(f"removed {ServiceManager(label=args.label).uninstall()}")
    return 0


def _start(args: argparse.Namespace) -> int:
    ServiceManager(label=args.label).start()
    print("started; check: mlxserve service status")
    return 0


def _stop(args: argparse.Namespace) -> int:
    ServiceManager(label=args.label).stop()
    print("stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    manager = ServiceManager(label=args.label)
    status = manager.status()
    # The address comes from the installed command line, then the config file and defaults.
    settings = Settings(**_given(args.flags_parser.parse_args(manager.installed_flags())))
    probe = health.probe(settings.host, settings.port)
    address = f"http://{health.probe_host(settings.host)}:{settings.port}"
    pid = f", pid {status.pid}" if status.pid else ""
    print(f"file:    {status.path}" + ("" if status.installed else " (not installed)"))
    print(f"loaded:  {'yes' if status.loaded else 'no'}{pid}, state {status.state}")
    print(f"server:  {probe.state} at {address}: {probe.detail}")
    return 0 if probe.state == "up" else NOT_RUNNING


def _logs(args: argparse.Namespace) -> int:
    path = ServiceManager(label=args.label).log_path
    if not path.is_file():
        raise ServiceError(f"no log file yet at {path}")
    offset = logs.tail(path, args.lines, sys.stdout)
    if args.follow:
        try:
            logs.follow(path, offset, sys.stdout)
        except KeyboardInterrupt:
            pass
    return 0


def _print(args: argparse.Namespace) -> int:
    data = ServiceManager(platform=args.platform, label=args.label).render(_given(args))
    sys.stdout.write(data.decode())
    return 0


ACTIONS = {
    "install": _install,
    "uninstall": _uninstall,
    "start": _start,
    "stop": _stop,
    "status": _status,
    "logs": _logs,
    "print": _print,
}


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``mlxserve service`` command; returns the process exit status."""
    try:
        return ACTIONS[args.service_command](args)
    except (ValidationError, ConfigFileError) as exc:
        print(f"mlxserve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"mlxserve service: {exc}", file=sys.stderr)
        return 1

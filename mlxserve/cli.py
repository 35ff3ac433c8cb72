"""Command line: ``mlxserve serve``, ``demo``, ``service ...``, ``doctor`` and ``integrate``.

The serve flags are generated from :class:`~mlxserve.config.Settings`, so each
setting is declared once and is also an ``MLXSERVE_*`` environment variable.
"""

import argparse
import logging
import os
import signal
import sys
import typing
from typing import Optional, Sequence

from pydantic import ValidationError

from mlxserve import __version__, integrate, model_cli
from mlxserve.config import DEMO_MODEL_NAME, DEMO_MODEL_PATH, ConfigFileError, Settings
from mlxserve.service_mgr import commands as service_commands

if typing.TYPE_CHECKING:
    import uvicorn


def _flag_type(annotation):
    """The argparse type and choices for a settings field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(typing.get_args(annotation))
    if args:  # Optional[X]
        return _flag_type(args[0])
    return annotation, None


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per settings field; unset flags leave env vars and defaults alone."""
    for name, field in Settings.model_fields.items():
        kind, choices = _flag_type(field.annotation)
        default = "" if field.default is None else f"; default: {field.default}"
        # A bool is a switch (--flag / --no-flag), not a flag that takes a value.
        how = (
            dict(action=argparse.BooleanOptionalAction)
            if kind is bool
            else dict(type=kind, choices=choices)
        )
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{field.description} (env MLXSERVE_{name.upper()}{default})",
            **how,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve", description="A local, OpenAI-compatible LLM server on MLX."
    )
    parser.add_argument("--version", action="version", version=f"mlxserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve a model over the OpenAI API.")
    add_settings_flags(serve)
    demo = commands.add_parser(
        "demo", help="Serve the bundled tiny demo model (no download; answers a few fixed prompts)."
    )
    add_settings_flags(demo)
    service = commands.add_parser(
        "service", help="Run the server as a launchd agent (macOS) or systemd user service (Linux)."
    )
    service_commands.add_service_commands(service, add_settings_flags)
    model_cli.add_model_commands(commands)
    integrate.add_integrate_command(commands, model_cli.DEFAULT_URL)
    doctor = commands.add_parser(
        "doctor",
        help="Check the platform, MLX, the model, memory, the port, the service and a live "
        "/healthz; exit 1 on any failure.",
    )
    add_settings_flags(doctor)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    values = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    if args.command == "demo":
        values.setdefault("model", str(DEMO_MODEL_PATH))
        values.setdefault("served_model_name", DEMO_MODEL_NAME)
    return Settings(**values)


def server_config(settings: Settings, app) -> "uvicorn.Config":
    """uvicorn's configuration for serving ``app``.

    Its event loop and HTTP protocol are uvicorn's defaults, which take uvloop and
    httptools (dependencies of mlxserve) when installed.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers go through ours (see setup_logging)
        log_level=settings.log_level,
        access_log=False,  # mlxserve.access logs each request, with its tokens and timings
        timeout_graceful_shutdown=settings.drain_timeout,
    )


def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT, then exit 0.

    In-flight requests get ``drain_timeout`` to finish first.
    """
    import uvicorn

    from mlxserve.app import create_app
    from mlxserve.observe import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    config = server_config(settings, create_app(settings))
    # uvicorn re-raises the stop signal once it has drained; a no-op handler makes
    # that re-raise harmless so a requested stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
    # Drained and shut down. Native threads (MLX, tokenizers) can abort the process
    # while the interpreter tears down ("terminate called without an active
    # exception"), turning a clean stop into SIGABRT: leave without running them.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "service":
        return service_commands.run(args)
    if args.command in ("pull", "ls", "rm", "run"):
        return model_cli.run_command(args)
    if args.command == "integrate":
        return integrate.run(args)
    try:
        settings = load_settings(args)
    except (ValidationError, ConfigFileError) as exc:
        print(f"mlxserve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "doctor":
        from mlxserve import doctor

        return doctor.report(doctor.run_checks(settings))
    serve(settings)
    return 0

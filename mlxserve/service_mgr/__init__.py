"""Run mlxserve as a per-user service: a launchd agent on macOS, a systemd user unit on Linux.

Data flow, top to bottom:

- ``spec.py``: what the service runs (command line, environment, log file), platform-neutral.
- ``launchd.py`` / ``systemd.py``: pure rendering of that spec into a plist or a unit file,
  the ``launchctl`` / ``systemctl`` argv lists, and parsing of their output.
- ``health.py``: is the port answering ``/healthz``, and is it mlxserve?
- ``runner.py``: the one place a ``launchctl`` / ``systemctl`` process is started.
- ``manager.py``: the side effects (write the file, run the commands) for each action.
- ``logs.py``: print and follow the log file.
- ``commands.py``: the ``mlxserve service ...`` subcommands on top of the manager.
"""

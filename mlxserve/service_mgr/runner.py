"""The single door through which every ``launchctl`` / ``systemctl`` call goes.

Tests substitute a recording runner for :class:`Runner` and assert the exact commands.
"""

import subprocess
from typing import Sequence


class Runner:
    """Runs a command to completion and returns its exit status and output (never raises on rc)."""

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        """Run ``argv`` (no shell) and capture its stdout and stderr as text.

        Args:
            argv: the command, e.g. ``["launchctl", "print", "gui/501/com.mlxserve.server"]``.

        Returns:
            The completed process; callers decide what a non-zero ``returncode`` means.
        """
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            # A missing launchctl/systemctl is reported like any failed command.
            return subprocess.CompletedProcess(list(argv), 127, "", str(exc))

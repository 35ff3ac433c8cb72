"""``mlxserve service logs``: print the end of the log file and optionally follow it."""

import codecs
import time
from collections import deque
from pathlib import Path
from typing import Callable, TextIO


def tail(path: Path, lines: int, out: TextIO) -> int:
    """Write the last ``lines`` lines of ``path`` to ``out``; returns the offset read up to."""
    with path.open("rb") as f:
        last = deque(f, maxlen=max(lines, 0))  # reads to the end even when keeping nothing
        out.write(b"".join(last).decode(errors="replace"))
        out.flush()
        return f.tell()


def follow(
    path: Path,
    offset: int,
    out: TextIO,
    stop: Callable[[], bool] = lambda: False,
    interval: float = 0.5,
) -> None:
    """Write what is appended to ``path`` after ``offset`` until ``stop()`` (or Ctrl-C).

    A file that shrinks (rotated or truncated) is read again from its start.
    """
    # Incremental, so a UTF-8 character split across two reads is decoded whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while not stop():
        size = path.stat().st_size if path.exists() else 0
        if size < offset:
            offset = 0
        if size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            out.write(decoder.decode(chunk))
            out.flush()
        time.sleep(interval)

"""One writer at a time: a lock file per chapter run (``lic.book run``) and per trained model's
state (every trainer, through :func:`lic.train.train`), holding the holder's pid, host and start.

A second run of the same chapter and scale, or a second trainer of the same model, is refused at
once (:class:`Busy`, one line naming the holder); a lock whose process is gone is taken over, with a
note. Different chapters, or different models, run side by side.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path


class Busy(RuntimeError):
    """Someone else holds the lock; the message names them and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _take(path: Path, what: str) -> dict:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):  # being written, or a torn file: treat as gone
                holder = {"pid": -1, "host": me["host"]}
            if holder.get("host") == me["host"] and holder.get("pid") != me["pid"] and not _alive(holder.get("pid", -1)):
                print(f"note: took over the lock of {what} from pid {holder.get('pid')} (no longer running, "
                      f"started {holder.get('started', '?')})", file=sys.stderr)
                path.unlink(missing_ok=True)
                continue
            if holder.get("pid") == me["pid"]:
                return me  # re-entered by the same process
            raise Busy(f"{what} is already running (pid {holder.get('pid')} on {holder.get('host')}, since "
                       f"{holder.get('started', '?')}); wait for it, or stop it (kill {holder.get('pid')}) and "
                       "run again") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise Busy(f"could not take the lock {path}")


@contextlib.contextmanager
def held(path, what: str):
    """Hold the lock at ``path`` while the block runs; :class:`Busy` if another live process has it."""
    path = Path(path)
    me = _take(path, what)
    try:
        yield me
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


def guarded(main, argv=None) -> int:
    """Run a command-line ``main``; a :class:`Busy` lock, or a batch that does not split over
    torchrun's processes, is one line on stderr and exit status 2."""
    from .distributed import SplitError, is_main

    try:
        return main(argv)
    except (Busy, SplitError) as err:
        if is_main():  # under torchrun every rank refuses; one says why
            print(f"error: {err}", file=sys.stderr)
        return 2

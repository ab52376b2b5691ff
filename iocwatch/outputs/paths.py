"""Output paths checked before a run reads its first packet.

Every output is validated (a file can be opened for writing, a directory can be made) and
compared with every input, so a run never fails after records were written (``--stats-json``
in a missing directory) and never destroys its own input (``-r x.pcapng -f x.pcapng``). Errors
are :class:`~iocwatch.usage.UsageError`: one line naming the flag and path, exit 2.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from iocwatch.usage import UsageError

#: (flag, path): one output or input of a run
Named = tuple[str, str]


def reason(exc: OSError) -> str:
    """The error in words, lower case, without the errno number (for one-line messages)."""
    if exc.errno == errno.EACCES or exc.errno == errno.EPERM:
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return (exc.strerror or str(exc)).lower()


def named(exc: OSError, path: str | None) -> OSError:
    """``exc`` naming the output it failed on: a buffered write's error names no file, and the
    user's message must (``stdout`` for '-' or None). A broken pipe is left as it is."""
    if exc.filename is None and not isinstance(exc, BrokenPipeError):
        exc.filename = "stdout" if path in (None, "-") else path
    return exc


def _parent_problem(path: str) -> str | None:
    """Why a file cannot be created at ``path`` (its directory missing, not one, not writable)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        return f"directory {parent} does not exist"
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    return None


def check_file(flag: str, path: str) -> None:
    """``path`` can be opened for writing (or created); nothing is written or truncated."""
    if path == "-":
        return
    where = f"{flag} {path}: cannot write"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        why = _parent_problem(path)
        if why:
            raise UsageError(f"{where}: {why}") from None
        return
    except OSError as exc:
        raise UsageError(f"{where}: {reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{where}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        return  # /dev/null, a FIFO or a terminal: opening a FIFO here would block
    if not st.st_mode & 0o222:  # even root must not write a file marked read-only (/proc)
        raise UsageError(f"{where}: file is read-only (mode {stat.S_IMODE(st.st_mode):04o})")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        raise UsageError(f"{where}: {reason(exc)}") from None


def check_dir(flag: str, path: str) -> None:
    """``path`` is a writable directory or can be made one (nothing is created now)."""
    where = f"{flag} {path}"
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise UsageError(f"{where}: not a directory")
    while not os.path.exists(probe):  # the nearest existing ancestor must be a directory
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise UsageError(f"{where}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: directory {probe} is not writable")


def _identity(path: str) -> tuple[int, int] | str | None:
    """What makes two paths the same file: (st_dev, st_ino) of an existing regular file or
    directory (symlinks and hard links included), the resolved path of one not yet made;
    None for devices, FIFOs and stdin/stdout, which several streams may share."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None
    return st.st_dev, st.st_ino


def refuse_same(outputs: Iterable[Named], inputs: Iterable[Named]) -> None:
    """No output may be an input or another output, by any name."""
    seen: dict[tuple[int, int] | str, Named] = {}
    for flag, path in inputs:
        ident = _identity(path)
        if ident is not None:
            seen.setdefault(ident, (flag, path))
    for flag, path in outputs:
        ident = _identity(path)
        if ident is None:
            continue
        other = seen.get(ident)
        if other is not None:
            raise UsageError(f"{flag} {path}: is the same file as {other[0]} {other[1]}; "
                             "refusing to overwrite it")
        seen[ident] = (flag, path)


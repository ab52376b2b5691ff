"""Dropping root once capture handles and outputs are open (``--user``).

The user is looked up before anything starts, so a typo is an error on the command line,
not a sensor that captured as root for a while and then died.
"""

from __future__ import annotations

import os


class PrivilegeError(Exception):
    """No such user, or the process cannot become it (one line on stderr)."""


def lookup_user(user: str) -> tuple[int, int]:
    """(uid, gid) of ``user``, checked before capture starts."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user: {user}")
    return pw.pw_uid, pw.pw_gid


def drop_privileges(ids: tuple[int, int], name: str = "") -> None:
    """Become that user and group for good (supplementary groups dropped too)."""
    uid, gid = ids
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot become {name or uid}: {exc.strerror or exc}")

"""Dropping root once capture handles and outputs are open (``--user``).

The user is looked up before anything starts, so a typo is an error on the command line,
not a sensor that captured as root for a while and then died.
"""

from __future__ import annotations

import importlib
import os

#: what the sensor imports at its first use, so that a run that never needs it does not pay
#: its start-up (cryptography: 30 ms): a process that drops root imports these first, since
#: afterwards the interpreter's own files may be out of its reach (a Python under /root).
#: tests/test_lazy_imports.py checks that every such import of the sensor's is listed.
LAZY_IMPORTS = (
    "communityid",  # outputs/alerts.py
    "cryptography.exceptions",  # protocols/x509.py, protocols/quic.py
    "cryptography.x509",  # protocols/x509.py, outputs/sessions.py
    "cryptography.hazmat.primitives.hashes",  # protocols/quic.py
    "cryptography.hazmat.primitives.hmac",
    "cryptography.hazmat.primitives.kdf.hkdf",
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.ciphers.aead",
    "tlsh",  # outputs/sessions.py (optional: without it the field is left out)
)


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


def import_lazy() -> None:
    """Import :data:`LAZY_IMPORTS` now (a missing optional one stays missing)."""
    for module in LAZY_IMPORTS:
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def drop_privileges(ids: tuple[int, int], name: str = "") -> None:
    """Become that user and group for good (supplementary groups dropped too), with every
    module the sensor imports lazily imported first."""
    import_lazy()
    uid, gid = ids
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot become {name or uid}: {exc.strerror or exc}")

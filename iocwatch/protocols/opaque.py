"""Stream starts of protocols that never carry a name iocwatch reads, nor turn into one.

A TCP direction nothing recognised is scanned for a late TLS handshake (SOCKS, proxies,
unknown upgrades) over its first 16 segments or 8 KB, and every one of those packets takes
the slow path, its peer's acknowledgements too. SMB and SSH, common on enterprise networks
and both made of many small segments, can be told from their first bytes and never become
TLS or HTTP later: SMB has no upgrade (its encryption is its own transform header), and SSH
is encrypted by itself after the version exchange. Such a direction is finished at once.
"""

from __future__ import annotations

__all__ = ["opaque_protocol"]

#: SMB's protocol ids after the 4-byte session header (direct TCP on 445, NetBIOS session
#: service on 139): SMB1, SMB2/3, SMB3's encryption transform and its compression transform
_SMB_IDS = frozenset({b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB"})


def opaque_protocol(data: bytes) -> str | None:
    """``"smb"`` or ``"ssh"`` when a direction's first bytes are an SMB message (a session
    message header, type 0, then an SMB protocol id) or an SSH version line, else None.

    An SSH server may send other lines before its version line (RFC 4253, 4.2): such a
    direction is not recognised here and is scanned as any other."""
    if data[:4] == b"SSH-":
        return "ssh"
    if data[:1] == b"\x00" and data[4:8] in _SMB_IDS:
        return "smb"
    return None

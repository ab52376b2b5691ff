"""Stream starts of protocols that never carry a name iocwatch reads, nor turn into one.

A TCP direction nothing recognised is scanned for a late TLS handshake (SOCKS, proxies,
unknown upgrades) over its first 16 segments or 8 KB, and every one of those packets takes
the slow path, its peer's acknowledgements too. SMB, SSH and DCE/RPC, common on enterprise
networks and made of many small segments, can be told from their first bytes and never become
TLS or HTTP later: SMB has no upgrade (its encryption is its own transform header), SSH is
encrypted by itself after the version exchange, and DCE/RPC over TCP (port 135 and the
dynamic ports it hands out) protects its calls with its own authentication layer (RPC over
HTTP starts as HTTP and is read as HTTP). Such a direction is finished at once.
"""

from __future__ import annotations

__all__ = ["opaque_protocol"]

#: SMB's protocol ids after the 4-byte session header (direct TCP on 445, NetBIOS session
#: service on 139): SMB1, SMB2/3, SMB3's encryption transform and its compression transform
_SMB_IDS = frozenset({b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB"})
#: the connection-oriented DCE/RPC PDUs that open a direction: bind, bind_ack, bind_nak,
#: alter_context, alter_context_resp (requests and responses come only after them; a SOCKS5
#: request or reply, version 5 too, has a zero where the PDU type is)
_RPC_TYPES = frozenset({11, 12, 13, 14, 15})
#: a DCE/RPC data representation: ASCII characters, IEEE floats, little or big endian
_RPC_DREPS = frozenset({b"\x10\x00\x00\x00", b"\x00\x00\x00\x00"})


def opaque_protocol(data: bytes) -> str | None:
    """``"smb"``, ``"ssh"`` or ``"dcerpc"`` when a direction's bytes begin (at its start, or
    where a proxy's handshake or an HTTP CONNECT left it to be read anew) with an SMB message
    (a session message header, type 0, then an SMB protocol id), an SSH version line or a
    DCE/RPC PDU header (version 5.0 or 5.1, a PDU that opens a direction, whole in one
    fragment, a plain data representation, a fragment length that holds the 16-byte header:
    its first ten bytes), else None.

    An SSH server may send other lines before its version line (RFC 4253, 4.2): such a
    direction is not recognised here and is scanned as any other."""
    if data[:4] == b"SSH-":
        return "ssh"
    if data[:1] == b"\x00" and data[4:8] in _SMB_IDS:
        return "smb"
    if (data[:1] == b"\x05" and len(data) >= 10 and data[1] <= 1 and data[2] in _RPC_TYPES
            and data[3] & 0x03 == 0x03 and data[4:8] in _RPC_DREPS):
        frag = (data[8] | data[9] << 8) if data[4] else (data[8] << 8 | data[9])
        if frag >= 16:
            return "dcerpc"
    return None

"""Link layers, tunnels and IP: from a captured frame to (addresses, transport, payload).

Handles Ethernet (Ethernet II and 802.2 LLC/SNAP), Linux SLL/SLL2, raw IPv4/IPv6, BSD NULL/LOOP,
802.11 (bare, radiotap, Prism and AVS monitor-mode headers), Linux NFLOG; 802.1Q/QinQ, MPLS,
PPPoE, GRE (with ERSPAN I/II/III), VXLAN, Geneve, IP-in-IP; IPv6 extension headers; IPv4 and
IPv6 fragments (bounded reassembly). Whatever it cannot decode is counted by kind in ``stats``, never
raised. Addresses stay as raw bytes: they are only turned into text for packets that produce a
record.
"""

from __future__ import annotations

from collections import Counter
from struct import Struct, unpack_from

from iocwatch.boundary import classify

# Link types (LINKTYPE_* / DLT_* numbers as they appear in files).
LT_NULL = 0
LT_ETHERNET = 1
LT_PPP = 9
LT_PPP_HDLC = 50
LT_RAW_DLT12 = 12
LT_RAW_DLT14 = 14
LT_RAW = 101
LT_LOOP = 108
LT_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_SLL2 = 276
LT_IEEE802_11 = 105
LT_PRISM = 119
LT_RADIOTAP = 127
LT_AVS = 163
LT_NFLOG = 239
WLAN_LINKTYPES = frozenset({LT_IEEE802_11, LT_PRISM, LT_RADIOTAP, LT_AVS})
RAW_LINKTYPES = frozenset({LT_RAW, LT_RAW_DLT12, LT_RAW_DLT14, LT_IPV4, LT_IPV6})

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_DOT1Q = 0x8100  # 802.1Q; with 802.1ad and the older QinQ types, a 4-byte tag
VLAN_TYPES = frozenset({ETH_DOT1Q, 0x88A8, 0x9100, 0x9200})
ETH_MPLS = frozenset({0x8847, 0x8848})
ETH_PPPOE_SESSION = 0x8864
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
ETH_ERSPAN2 = 0x88BE
ETH_ERSPAN3 = 0x22EB
ETH_PPP = 0x880B
ETH_CISCO_SGT = 0x8909  # Cisco MetaData: 6 bytes (version, length, SGT option), then a type


def wire_type(etype: int) -> bytes:
    """An ethertype as a frame carries it (the inline tests here and decode/fastpath.py
    compare frame bytes, not integers)."""
    return etype.to_bytes(2, "big")


IPV4_TYPE, IPV6_TYPE, DOT1Q_TYPE = wire_type(ETH_IPV4), wire_type(ETH_IPV6), wire_type(ETH_DOT1Q)

LLC_SNAP = b"\xaa\xaa\x03"  # DSAP, SSAP, UI control: a SNAP header (OUI, ethertype) follows
#: SNAP OUIs whose protocol id is an ethertype: RFC 1042 encapsulation and 802.1H bridge tunnel
SNAP_ETHERTYPE_OUIS = frozenset({b"\x00\x00\x00", b"\x00\x00\xf8"})
AVS_MAGIC = frozenset({0x80211001, 0x80211002})
NFULA_PAYLOAD = 9

IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
IPV6_EXT = frozenset({0, 43, 60, 135, 139, 140})
IPPROTO_AH = 51
IPPROTO_FRAG6 = 44

VXLAN_PORTS = frozenset({4789, 8472})
GENEVE_PORT = 6081
_TUNNEL_PORTS = VXLAN_PORTS | {GENEVE_PORT}  # UDP ports whose datagrams _transport unwraps

#: an IPv4 header from its total length: total length, id, fragment field, TTL, protocol,
#: (checksum,) addresses; an IPv6 header: version/class/label, payload length, next header,
#: hop limit, addresses (Decoder.decode's inline tests)
_IPV4_HEAD = Struct("!HHHBB2x4s4s").unpack_from
_IPV6_HEAD = Struct("!IHBB16s16s").unpack_from
_IP_ETYPES = frozenset({IPV4_TYPE, IPV6_TYPE})
_IPV4_PLAIN = IPV4_TYPE + b"\x45"  # IPv4's type, then version 4 and a 20-byte header
_NO_MACS = bytes(12)  # a Linux cooked frame's stand-in Ethernet addresses (Decoder.decode)

MAX_DEPTH = 6  # nested encapsulations before we call it hostile
FRAG_MAX_DATAGRAMS = 4096
FRAG_MAX_SIZE = 65535
FRAG_TIMEOUT = 30

#: (ip version, src, dst, transport protocol, transport bytes, ttl/hop limit, ipv4 id or
#: ipv6 flow label)
Decoded = tuple[int, bytes, bytes, int, bytes, int, int]


class _Fragments:
    """One datagram being reassembled: pieces by offset, first copy of a byte wins."""

    __slots__ = ("pieces", "total", "size", "first_seen", "header")

    def __init__(self, now: int):
        self.pieces: list[tuple[int, bytes]] = []
        self.total = -1
        self.size = 0
        self.first_seen = now
        self.header: tuple[int, bytes, bytes, int, int, int] | None = None

    def add(self, offset: int, data: bytes, last: bool) -> bytes | None:
        self.pieces.append((offset, data))
        self.size += len(data)
        if last:
            self.total = offset + len(data)
        if self.total < 0:
            return None
        out = bytearray(self.total)
        covered = 0
        for off, piece in sorted(self.pieces):
            if off > covered:
                return None
            end = min(off + len(piece), self.total)
            if end > covered:
                out[covered:end] = piece[covered - off : end - off]
                covered = end
        return bytes(out) if covered >= self.total else None


class Decoder:
    """Decodes frames; keeps fragment state and per-kind counters."""

    def __init__(self, stats: Counter[str] | None = None):
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.frags: dict[tuple, _Fragments] = {}
        self.now = 0
        #: the IPv6 extension headers of the packet just decoded (mercury's ``ip.extensions``)
        self.ext6 = b""

    # -- link layers ----------------------------------------------------------------------
    def decode(self, linktype: int, data: bytes, now: int = 0) -> Decoded | None:
        """Return the innermost IP packet's transport view, or None (counted)."""
        self.now = now
        self.ext6 = b""
        try:
            if linktype == LT_ETHERNET:
                # the common frame inline: untagged IPv4 without options or fragmentation,
                # carrying TCP, or UDP to a port that is no tunnel; the same result as the
                # general path below (which takes everything else), one call instead of four
                # (tests/test_decode_fuzz.py compares the two)
                if len(data) >= 34 and data[12:15] == _IPV4_PLAIN:
                    total, ipid, frag, ttl, proto, src, dst = _IPV4_HEAD(data, 16)
                    end = 14 + total
                    if (total >= 20 and end <= len(data) and not frag & 0x3FFF
                            and (proto == IPPROTO_TCP or (proto == IPPROTO_UDP and (
                                total < 28 or unpack_from("!H", data, 36)[0] not in _TUNNEL_PORTS)))):
                        return 4, src, dst, proto, data[34:end], ttl, ipid
                # and untagged IPv6 without extension headers, the same way (_ipv6's result)
                elif len(data) >= 58 and data[12:14] == IPV6_TYPE:
                    first, plen, nxt, hop, src, dst = _IPV6_HEAD(data, 14)
                    if first >> 28 == 6 and (nxt == IPPROTO_TCP or (nxt == IPPROTO_UDP and unpack_from(
                            "!H", data, 56)[0] not in _TUNNEL_PORTS)):
                        end = 54 + plen
                        if end > len(data) or plen == 0:  # cut short, or a jumbogram
                            end = len(data)
                        return 6, src, dst, nxt, data[54:end], hop, first & 0xFFFFF
                # one 802.1Q tag before IPv4 or IPv6 (a trunk port's capture): the tests above
                # on the frame without it, a copy (what the general path says of the tag, the
                # same result); more tags, or anything else behind it, the general path
                elif data[12:14] == DOT1Q_TYPE and data[16:18] in _IP_ETYPES:
                    self.stats["encap_vlan"] += 1
                    return self.decode(LT_ETHERNET, data[:12] + data[16:], now)
                return self._ethernet(data, 0, 0)
            if linktype == LT_SLL:
                if len(data) < 16:
                    return self._bad("sll_truncated")
                # after its 16-byte header (the ethertype last) the general path is Ethernet's:
                # read as Ethernet with no addresses, for the inline tests above
                return self.decode(LT_ETHERNET, _NO_MACS + data[14:], now)
            if linktype == LT_SLL2:
                if len(data) < 20:
                    return self._bad("sll2_truncated")
                return self._ethertype(unpack_from("!H", data, 0)[0], data, 20, 0)
            if linktype in RAW_LINKTYPES:
                return self._ip_by_version(data, 0, 0)
            if linktype in (LT_PPP, LT_PPP_HDLC):
                off = 2 if data[:2] == b"\xff\x03" else 0
                if len(data) <= off:
                    return self._bad("ppp_truncated")
                if data[off] & 1:  # protocol field compressed to one byte
                    return self._ppp(data[off], data, off + 1, 0)
                if len(data) < off + 2:
                    return self._bad("ppp_truncated")
                return self._ppp(unpack_from("!H", data, off)[0], data, off + 2, 0)
            if linktype in WLAN_LINKTYPES:
                return self._wlan_link(linktype, data)
            if linktype == LT_NFLOG:
                return self._nflog(data)
            if linktype in (LT_NULL, LT_LOOP):
                if len(data) < 4:
                    return self._bad("null_truncated")
                fam = unpack_from("!I" if linktype == LT_LOOP else "<I", data, 0)[0]
                if fam > 0xFFFF:  # written on a host of the other byte order
                    fam = int.from_bytes(data[:4], "big" if linktype != LT_LOOP else "little")
                if fam == 2:
                    return self._ipv4(data, 4, 0)
                if fam in (10, 24, 28, 30):
                    return self._ipv6(data, 4, 0)
                return self._bad("null_family")
        except Exception as exc:  # the decoder's input boundary (boundary.py): counted, skipped
            return self._bad("decode_" + classify(exc))
        self.stats[f"linktype_unsupported_{linktype}"] += 1
        return None

    def _bad(self, kind: str) -> None:
        self.stats["malformed_" + kind] += 1
        return None

    def _ethernet(self, data: bytes, off: int, depth: int) -> Decoded | None:
        if len(data) < off + 14:
            return self._bad("ethernet_truncated")
        return self._ethertype(unpack_from("!H", data, off + 12)[0], data, off + 14, depth)

    def _ethertype(self, etype: int, data: bytes, off: int, depth: int) -> Decoded | None:
        for _ in range(8):  # VLAN stacks
            if etype not in VLAN_TYPES:
                break
            if len(data) < off + 4:
                return self._bad("vlan_truncated")
            self.stats["encap_vlan"] += 1  # (tags of decoded packets: the fast path decodes none)
            etype = unpack_from("!H", data, off + 2)[0]
            off += 4
        if etype == ETH_IPV4:
            return self._ipv4(data, off, depth)
        if etype == ETH_IPV6:
            return self._ipv6(data, off, depth)
        if depth >= MAX_DEPTH:
            return self._bad("too_deep")
        if etype in ETH_MPLS:
            return self._mpls(data, off, depth + 1)
        if etype == ETH_PPPOE_SESSION:
            self.stats["encap_pppoe"] += 1
            if len(data) < off + 8:
                return self._bad("pppoe_truncated")
            return self._ppp(unpack_from("!H", data, off + 6)[0], data, off + 8, depth + 1)
        if etype == ETH_TEB:
            return self._ethernet(data, off, depth + 1)
        if etype == ETH_CISCO_SGT:
            if len(data) < off + 8:
                return self._bad("sgt_truncated")
            self.stats["encap_cisco_sgt"] += 1
            return self._ethertype(unpack_from("!H", data, off + 6)[0], data, off + 8, depth + 1)
        if etype < 0x0600:  # 802.3 length field: 802.2 LLC follows
            return self._llc(data, off, depth + 1, "ethernet_8023")
        self.stats[f"ethertype_other_{etype:04x}"] += 1
        return None

    def _llc(self, data: bytes, off: int, depth: int, other: str) -> Decoded | None:
        """802.2 LLC: only SNAP with an ethertype carries IP; other SAPs (STP, NetBIOS, IPX)
        are counted under ``other``."""
        if data[off : off + 3] != LLC_SNAP or data[off + 3 : off + 6] not in SNAP_ETHERTYPE_OUIS:
            self.stats[other] += 1
            return None
        if len(data) < off + 8:
            return self._bad("snap_truncated")
        self.stats["encap_llc_snap"] += 1
        return self._ethertype(unpack_from("!H", data, off + 6)[0], data, off + 8, depth)

    # -- 802.11 ---------------------------------------------------------------------------
    def _wlan_link(self, linktype: int, data: bytes) -> Decoded | None:
        """Strip the monitor-mode header (radiotap, Prism, AVS), then read the 802.11 frame."""
        fcs = pad = False
        off = 0
        if linktype == LT_RADIOTAP:
            if len(data) < 8 or data[0] != 0:
                return self._bad("radiotap_header")
            off = unpack_from("<H", data, 2)[0]
            if off < 8 or off > len(data):
                return self._bad("radiotap_header")
            flags = _radiotap_flags(data, off)
            if flags is not None:
                if flags & 0x40:  # the card says the frame check sequence failed
                    self.stats["wlan_bad_fcs"] += 1
                    return None
                fcs = bool(flags & 0x10)
                pad = bool(flags & 0x20)  # the MAC header is padded to 4 bytes (Atheros)
        elif linktype == LT_PRISM and len(data) >= 4 and unpack_from("!I", data, 0)[0] in AVS_MAGIC:
            linktype = LT_AVS  # capture tools write AVS headers under the Prism link type
        if linktype == LT_AVS:
            if len(data) < 8 or unpack_from("!I", data, 0)[0] not in AVS_MAGIC:
                return self._bad("avs_header")
            off = unpack_from("!I", data, 4)[0]
        elif linktype == LT_PRISM:
            if len(data) < 8:
                return self._bad("prism_header")
            off = unpack_from("<I", data, 4)[0]  # msglen, in the capturing host's order
            if off > len(data):
                off = unpack_from(">I", data, 4)[0]
        if off < 0 or off > len(data) or (linktype in (LT_PRISM, LT_AVS) and off < 8):
            return self._bad(f"{'prism' if linktype == LT_PRISM else 'avs'}_header")
        end = len(data) - 4 if fcs else len(data)
        return self._wlan(data[off:end], pad)

    def _wlan(self, frame: bytes, pad: bool = False) -> Decoded | None:
        """An 802.11 MAC frame: data frames' LLC/SNAP payload; the rest is counted."""
        if len(frame) < 24:
            return self._bad("wlan_truncated")
        fc0, fc1 = frame[0], frame[1]
        ftype = (fc0 >> 2) & 3
        subtype = fc0 >> 4
        if fc0 & 3:
            return self._bad("wlan_version")
        if ftype != 2:
            self.stats["wlan_management" if ftype == 0 else "wlan_control"] += 1
            return None
        if subtype & 0x4:  # Null and QoS Null: no body
            self.stats["wlan_null_data"] += 1
            return None
        if fc1 & 0x40:
            self.stats["wlan_protected"] += 1  # encrypted (WEP/TKIP/CCMP/GCMP): not readable
            return None
        hdr = 30 if fc1 & 0x03 == 0x03 else 24  # ToDS and FromDS: a fourth address (WDS/mesh)
        amsdu = 0
        if subtype & 0x8:  # QoS data: QoS control, and HT control when Order is set
            if len(frame) < hdr + 2:
                return self._bad("wlan_truncated")
            amsdu = frame[hdr] & 0x80
            hdr += 2
            if fc1 & 0x80:
                hdr += 4
        if pad:
            hdr = (hdr + 3) & ~3
        if amsdu:
            return self._amsdu(frame, hdr)
        if fc1 & 0x04 or unpack_from("<H", frame, 22)[0] & 0x000F:
            self.stats["wlan_fragment"] += 1  # MSDU fragments are not reassembled
            return None
        if len(frame) < hdr + 8:
            return self._bad("wlan_truncated")
        return self._llc(frame, hdr, 1, "wlan_llc_other")

    def _amsdu(self, frame: bytes, off: int) -> Decoded | None:
        """The first subframe of an A-MSDU (DA, SA, length, then LLC/SNAP): later subframes
        are counted, not decoded (one frame in, one packet out)."""
        if len(frame) < off + 14 + 8:
            return self._bad("wlan_amsdu_truncated")
        self.stats["wlan_amsdu"] += 1
        length = unpack_from("!H", frame, off + 12)[0]
        body = frame[: off + 14 + length]
        return self._llc(body, off + 14, 1, "wlan_llc_other")

    # -- NFLOG ----------------------------------------------------------------------------
    def _nflog(self, data: bytes) -> Decoded | None:
        """Linux NFLOG: a 4-byte header (family, version, resource id), then TLVs whose
        length and type are in the capturing host's byte order; NFULA_PAYLOAD holds the
        packet from its IP header."""
        if len(data) < 8:
            return self._bad("nflog_truncated")
        order = "<"
        first = unpack_from("<H", data, 4)[0]
        if first < 4 or first > len(data) - 4:
            order = ">"
        p = 4
        for _ in range(64):
            if p + 4 > len(data):
                break
            tlen, ttype = unpack_from(order + "HH", data, p)
            if tlen < 4 or p + tlen > len(data):
                return self._bad("nflog_tlv")
            if ttype & 0x3FFF == NFULA_PAYLOAD:
                return self._ip_by_version(data[p + 4 : p + tlen], 0, 0)
            p += (tlen + 3) & ~3
        self.stats["nflog_no_payload"] += 1
        return None

    def _ppp(self, proto: int, data: bytes, off: int, depth: int) -> Decoded | None:
        if proto == 0x0021:
            return self._ipv4(data, off, depth)
        if proto == 0x0057:
            return self._ipv6(data, off, depth)
        self.stats[f"ppp_other_{proto:04x}"] += 1
        return None

    def _mpls(self, data: bytes, off: int, depth: int) -> Decoded | None:
        self.stats["encap_mpls"] += 1
        for _ in range(16):
            if len(data) < off + 4:
                return self._bad("mpls_truncated")
            bottom = data[off + 2] & 1
            off += 4
            if bottom:
                break
        else:
            return self._bad("mpls_labels")
        return self._ip_by_version(data, off, depth, mpls=True)

    def _ip_by_version(self, data: bytes, off: int, depth: int, mpls: bool = False) -> Decoded | None:
        if len(data) <= off:
            return self._bad("ip_truncated")
        version = data[off] >> 4
        if version == 4:
            return self._ipv4(data, off, depth)
        if version == 6:
            return self._ipv6(data, off, depth)
        if mpls and version == 0:  # pseudowire control word, then Ethernet
            return self._ethernet(data, off + 4, depth + 1)
        return self._bad("ip_version")

    # -- IP -------------------------------------------------------------------------------
    def _ipv4(self, data: bytes, off: int, depth: int) -> Decoded | None:
        if len(data) < off + 20:
            return self._bad("ipv4_truncated")
        vihl = data[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return self._bad("ipv4_header")
        total, ipid, frag = unpack_from("!HHH", data, off + 2)
        if total == 0:  # TCP segmentation offload: the NIC fills the length in later
            self.stats["ipv4_length_zero_tso"] += 1
            total = len(data) - off
        end = off + total
        if total < ihl:
            return self._bad("ipv4_length")
        if end > len(data):
            self.stats["ipv4_snapped"] += 1  # captured shorter than sent; parse what we have
            end = len(data)
        proto = data[off + 9]
        ttl = data[off + 8]
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        payload = data[off + ihl : end]
        if frag & 0x3FFF:
            payload = self._fragment(
                (4, src, dst, ipid, proto), (frag & 0x1FFF) * 8, payload, bool(frag & 0x2000)
            )
            if payload is None:
                return None
        return self._transport(4, src, dst, proto, payload, ttl, ipid, depth)

    def _ipv6(self, data: bytes, off: int, depth: int) -> Decoded | None:
        if len(data) < off + 40:
            return self._bad("ipv6_truncated")
        if data[off] >> 4 != 6:
            return self._bad("ipv6_header")
        plen = unpack_from("!H", data, off + 4)[0]
        nxt = data[off + 6]
        hop = data[off + 7]
        label = unpack_from("!I", data, off)[0] & 0xFFFFF  # reported where IPv4 has its id
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        end = off + 40 + plen
        if end > len(data) or plen == 0:  # jumbograms carry plen 0
            end = len(data)
        p = off + 40
        for _ in range(16):
            if nxt in IPV6_EXT or nxt == IPPROTO_AH:
                if p + 8 > end:
                    return self._bad("ipv6_ext_truncated")
                length = (data[p + 1] + 2) * 4 if nxt == IPPROTO_AH else (data[p + 1] + 1) * 8
                nxt = data[p]
                p += length
            elif nxt == IPPROTO_FRAG6:
                if p + 8 > end:
                    return self._bad("ipv6_frag_truncated")
                inner = data[p]
                offmf, ident = unpack_from("!HI", data, p + 2)
                p += 8
                payload = self._fragment(
                    (6, src, dst, ident, inner), offmf & 0xFFF8, data[p:end], bool(offmf & 1)
                )
                if payload is None:
                    return None
                return self._transport(6, src, dst, inner, payload, hop, label, depth)
            else:
                break
        else:
            return self._bad("ipv6_ext_chain")
        if p > end:
            return self._bad("ipv6_ext_truncated")
        self.ext6 = data[off + 40 : p]  # (empty without extension headers)
        return self._transport(6, src, dst, nxt, data[p:end], hop, label, depth)

    def _fragment(self, key: tuple, offset: int, data: bytes, more: bool) -> bytes | None:
        self.stats["ip_fragments"] += 1
        frags = self.frags
        entry = frags.get(key)
        if entry is None:
            if len(frags) >= FRAG_MAX_DATAGRAMS:
                self._expire_fragments(force=True)
            entry = frags[key] = _Fragments(self.now)
        if entry.size + len(data) > FRAG_MAX_SIZE or offset + len(data) > FRAG_MAX_SIZE:
            del frags[key]
            return self._bad("fragment_oversize")
        whole = entry.add(offset, data, not more)
        if whole is None:
            if len(frags) > 64 and self.now - entry.first_seen > FRAG_TIMEOUT:
                self._expire_fragments()
            return None
        del frags[key]
        self.stats["ip_reassembled"] += 1
        return whole

    def _expire_fragments(self, force: bool = False) -> None:
        now = self.now
        stale = [k for k, v in self.frags.items() if now - v.first_seen > FRAG_TIMEOUT]
        if force and not stale:
            stale = list(self.frags)[: len(self.frags) // 2]
        for k in stale:
            del self.frags[k]
        self.stats["fragments_expired"] += len(stale)

    # -- transport and tunnels ---------------------------------------------------------------
    def _transport(
        self, ver: int, src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int, ipid: int,
        depth: int,
    ) -> Decoded | None:
        if proto == IPPROTO_UDP and len(payload) >= 8 and depth < MAX_DEPTH:
            dport = unpack_from("!H", payload, 2)[0]
            if dport in VXLAN_PORTS and len(payload) >= 16 and payload[8] & 0x08:
                self.stats["encap_vxlan"] += 1
                return self._ethernet(payload, 16, depth + 1)
            if dport == GENEVE_PORT and len(payload) >= 16:
                self.stats["encap_geneve"] += 1
                optlen = (payload[8] & 0x3F) * 4
                etype = unpack_from("!H", payload, 10)[0]
                return self._ethertype(etype, payload, 16 + optlen, depth + 1)
        elif proto == IPPROTO_GRE:
            if depth >= MAX_DEPTH:
                return self._bad("too_deep")
            return self._gre(payload, depth + 1)
        elif proto == IPPROTO_IPIP:
            if depth >= MAX_DEPTH:
                return self._bad("too_deep")
            self.stats["encap_ipip"] += 1
            return self._ipv4(payload, 0, depth + 1)
        elif proto == IPPROTO_IPV6:
            if depth >= MAX_DEPTH:
                return self._bad("too_deep")
            self.stats["encap_ip6ip"] += 1
            return self._ipv6(payload, 0, depth + 1)
        return ver, src, dst, proto, payload, ttl, ipid

    def _gre(self, data: bytes, depth: int) -> Decoded | None:
        if len(data) < 4:
            return self._bad("gre_truncated")
        self.stats["encap_gre"] += 1
        flags, proto = unpack_from("!HH", data, 0)
        off = 4
        version = flags & 7
        if flags & 0x8000:
            off += 4  # checksum + reserved
        if flags & 0x2000:
            off += 4  # key (or PPTP payload length + call id)
        if flags & 0x1000:
            off += 4  # sequence number
        if version == 1 and flags & 0x0080:
            off += 4  # PPTP acknowledgment number
        if version == 1 and proto == ETH_PPP:
            if len(data) < off + 2:
                return self._bad("gre_truncated")
            if data[off] == 0xFF and data[off + 1] == 0x03:
                off += 2
            if len(data) < off + 2:
                return self._bad("gre_truncated")
            return self._ppp(unpack_from("!H", data, off)[0], data, off + 2, depth)
        if proto == ETH_ERSPAN2:
            self.stats["encap_erspan"] += 1
            if flags & 0x1000:  # type II has a sequence number and an 8-byte header
                off += 8
            return self._ethernet(data, off, depth)  # type I: Ethernet right away
        if proto == ETH_ERSPAN3:
            self.stats["encap_erspan"] += 1
            if len(data) < off + 12:
                return self._bad("erspan_truncated")
            optional = data[off + 11] & 1
            off += 12 + (8 if optional else 0)
            return self._ethernet(data, off, depth)
        return self._ethertype(proto, data, off, depth)


def _radiotap_flags(data: bytes, hlen: int) -> int | None:
    """The radiotap Flags field (FCS included, bad FCS), if the first namespace has it."""
    present = unpack_from("<I", data, 4)[0]
    p = 8
    word = present
    while word & 0x80000000:  # further presence words
        if p + 4 > hlen:
            return None
        word = unpack_from("<I", data, p)[0]
        p += 4
    if not present & 0x02:
        return None
    if present & 0x01:  # TSFT: 8 bytes, 8-aligned
        p = (p + 7) & ~7
        p += 8
    return data[p] if p < hlen else None

"""One normalisation for both sides of a match: indicator files and names seen on the wire.

Names become lower-case A-labels (punycode) with one trailing dot removed, so a Unicode
indicator matches its punycode on the wire and the reverse. A label IDNA refuses (emoji under
IDNA 2008, underscores, over-long labels, undecodable bytes) is kept as it is, lower-cased,
rather than dropped: attackers use exactly such names.
"""

from __future__ import annotations

import re
import socket

import idna

from iocwatch.model.hosts import split_authority

from . import model as m

# Full stops IDNA (UTS 46) treats as label separators.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_HEX = frozenset("0123456789abcdef")
_IPCHARS = frozenset("0123456789abcdef:./%")
_JA4 = re.compile(r"[tqd][0-9a-z]{2}[di][0-9]{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
_JA4_LOOSE = re.compile(r"[0-9a-z]{10}_[0-9a-f]{12}_[0-9a-f]{12}")
_DEFANG = (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[dot]", "."), ("[:]", ":"))
# An ASCII name of 2+ labels whose last label starts with a letter: cannot be an address,
# a hash, a fingerprint or a URL.
_PLAIN_DOMAIN = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+[a-z][a-z0-9-]{0,62}\.?")
#: the same without the trailing dot: a lower-case stripped text it matches fully is a domain
#: whose normalised value is that text (readers use it to take whole runs of lines at once)
PLAIN_NAME = re.compile(_PLAIN_DOMAIN.pattern[:-3])
_BAD_NAME_CHARS = frozenset(" \t\r\n\x0b\x0c/@:,;\"'<>")
MAX_VALUE = 4096
#: characters of blocklist filter rules, never of a name a feed means
_RULE_CHARS = frozenset("|^$")


def _label(label: str) -> str:
    """A-label for a Unicode label, or the label itself (lower-cased) when IDNA refuses it."""
    if label.isascii():
        return label.lower()
    try:
        return idna.encode(label, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:  # IDNA 2003 still accepts symbols (emoji domains) that are registered in practice
        return label.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return label.lower()


def normalise_name(name: str | bytes) -> str:
    """Canonical form of a DNS name for matching; never raises on any str or bytes."""
    if not isinstance(name, str):
        # invalid UTF-8 bytes stay visible as \\xNN escapes instead of being dropped
        name = bytes(name).decode("utf-8", "backslashreplace")
    s = name.strip()
    if s.isascii():
        s = s.lower()
        return s[:-1] if s.endswith(".") else s
    s = s.translate(_DOTS)
    if s.endswith("."):
        s = s[:-1]
    return ".".join([_label(lab) for lab in s.split(".")])


def normalise_steps(name: str) -> list[tuple[str, str]]:
    """What :func:`normalise_name` does to a name, step by step, for ``iocwatch explain``:
    ``(step, result)`` for the raw text, lower case, the trailing dot and IDNA. The last
    result is :func:`normalise_name`'s own, so the steps can never disagree with it."""
    s = name.strip()
    low = s.lower() if s.isascii() else s.translate(_DOTS).lower()
    undotted = low[:-1] if low.endswith(".") else low
    return [("raw", name), ("lower case", low), ("trailing dot removed", undotted),
            ("IDNA (A-labels)", normalise_name(name))]


def refang(value: str) -> str:
    """Undo the usual defanging of report text (``evil[.]com``, ``hxxp://``)."""
    for a, b in _DEFANG:
        if a in value:
            value = value.replace(a, b)
    low = value[:8].lower()
    if low.startswith(("hxxp://", "hxxps://")):
        value = "http" + value[4:]
    return value


def parse_ip(value: str) -> tuple[int, int, int] | None:
    """``(version, network int, prefix length)`` of an address or CIDR, else None.

    Host bits of a CIDR are cleared; leading zeros are refused (octal ambiguity);
    IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4 so it meets the IPv4 indicators.
    """
    s = value.strip().lower()
    if "%" in s:  # zone id: not part of the address
        addr, _, rest = s.partition("%")
        s = addr + (rest[rest.index("/"):] if "/" in rest else "")
    if not s or len(s) > 64 or not set(s) <= _IPCHARS:
        return None
    addr, sep, plen_text = s.partition("/")
    try:
        if ":" in addr:
            ver, bits, packed = 6, 128, socket.inet_pton(socket.AF_INET6, addr)
        else:
            ver, bits, packed = 4, 32, socket.inet_pton(socket.AF_INET, addr)
    except (OSError, ValueError):
        return None
    plen = bits
    if sep:
        if not plen_text.isdigit() or len(plen_text) > 3 or int(plen_text) > bits:
            return None
        plen = int(plen_text)
    n = int.from_bytes(packed, "big")
    if ver == 6 and n >> 32 == 0xFFFF and plen >= 96:
        ver, bits, n, plen = 4, 32, n & 0xFFFFFFFF, plen - 96
    n &= ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return ver, n, plen


def ip_text(version: int, value: int, plen: int) -> str:
    """Canonical text of what :func:`parse_ip` returned (an address, or ``net/len``)."""
    if version == 4:
        addr = socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
        return addr if plen == 32 else f"{addr}/{plen}"
    addr = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
    return addr if plen == 128 else f"{addr}/{plen}"


def port_number(text: str) -> int | None:
    """A port written in an indicator (1-65535, at most five digits), else None (also for
    digits ``int`` does not read, such as ``²``, which ``str.isdigit`` accepts)."""
    if not (text.isdigit() and len(text) <= 5):
        return None
    try:
        number = int(text)
    except ValueError:
        return None
    return number if 0 < number < 65536 else None


def split_url(url: str) -> tuple[str, str, str] | None:
    """``(host, port, path)`` of a URL with or without scheme; default ports are dropped.

    The scheme itself is not kept: an indicator ``http://evil.com/x`` and a request for
    ``/x`` on evil.com port 80 describe the same thing, and scheme-less URLs (Zeek intel)
    are common.
    """
    s = url.strip()
    scheme = ""
    i = s.find("://")
    if 0 < i <= 16:
        scheme, s = s[:i].lower(), s[i + 3:]
    cut = len(s)
    for ch in "/?#":
        j = s.find(ch)
        if j != -1 and j < cut:
            cut = j
    authority, path = s[:cut], s[cut:]
    path = path.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port, ok = split_authority(authority)
    if not ok:
        return None
    if port:
        number = port_number(port)
        if number is None:
            return None
        port = str(number)  # "08443" is port 8443
    if (port == "80" and scheme in ("http", "")) or (port == "443" and scheme in ("https", "")):
        port = ""
    if not host:
        return None
    ip = parse_ip(host)
    if ip is not None:
        host = ip_text(*ip)
    else:
        host = normalise_name(host)
        if not host or not _good_name(host):
            return None
    return host, port, path


def url_keys(url: str) -> tuple[str, ...]:
    """Lookup keys of an observed URL: the full key, then the key without its query."""
    parts = split_url(url)
    if parts is None:
        return ()
    host, port, path = parts
    base = host + (":" + port if port else "")
    key = base + path
    q = path.find("?")
    return (key, base + path[:q]) if q != -1 else (key,)


def cert_hash(value: str) -> tuple[str, str] | None:
    """``(kind, hex)`` for a certificate SHA-1/SHA-256 in any usual spelling (``AB:CD:..``)."""
    h = value.strip().lower().replace(":", "").replace(" ", "")
    if not set(h) <= _HEX:
        return None
    if len(h) == 40:
        return m.CERT_SHA1, h
    if len(h) == 64:
        return m.CERT_SHA256, h
    return None


def fingerprint(kind: str, value: str) -> str | None:
    """Canonical JA3/JA3S (32 hex), JA4 string or SPKI SHA-256 (64 hex), else None."""
    v = value.strip().lower()
    if kind in (m.JA3, m.JA3S):
        return v if len(v) == 32 and set(v) <= _HEX else None
    if kind == m.JA4:
        return v if _JA4_LOOSE.fullmatch(v) else None
    if kind == m.SPKI:
        v = v.replace(":", "")
        return v if len(v) == 64 and set(v) <= _HEX else None
    return None


def _good_name(name: str) -> bool:
    if not name or len(name) > 1024 or name.startswith(".") or ".." in name:
        return False
    return not (set(name) & _BAD_NAME_CHARS)


def domain(value: str) -> tuple[str, bool] | str:
    """``(normalised, wildcard)`` for a domain indicator, or a reason it is not one.

    A leading ``.`` (squid style) means the same as no dot; ``*.`` means subdomains only.
    """
    s = value.strip()
    wildcard = False
    if s.startswith("*."):
        wildcard, s = True, s[2:]
    elif s.startswith("."):
        s = s[1:]
    name = normalise_name(s)
    if "*" in name:
        return "wildcard only allowed as a leading '*.'"
    if not _good_name(name):
        return f"not a valid domain name: {value[:80]!r}"
    return name, wildcard


def _feed_domain(value: str) -> tuple[str, bool] | str:
    """:func:`domain` for an indicator file's value: ``|``, ``^`` and ``$`` are refused too
    (a name seen on the wire may hold anything; a feed's name with them is a filter rule)."""
    got = domain(value)
    if isinstance(got, tuple) and set(got[0]) & _RULE_CHARS:
        return f"not a domain name ('|', '^' or '$' belong to filter rules): {value[:80]!r}"
    return got


#: Kind words accepted as ``kind:value`` prefixes in plain lists and as CSV type cells.
TYPE_NAMES: dict[str, str] = {
    "domain": m.DOMAIN, "hostname": m.DOMAIN, "host": m.DOMAIN, "fqdn": m.DOMAIN,
    "domain-name": m.DOMAIN, "domain_name": m.DOMAIN, "dns": m.DOMAIN,
    "url": m.URL, "uri": m.URL, "link": m.URL,
    "ip": m.IP, "ipv4": m.IP, "ipv6": m.IP, "ip-src": m.IP, "ip-dst": m.IP, "addr": m.IP,
    "ipv4-addr": m.IP, "ipv6-addr": m.IP, "address": m.IP, "ip_address": m.IP,
    "cidr": m.CIDR, "subnet": m.CIDR, "network": m.CIDR, "netblock": m.CIDR,
    "cert_sha1": m.CERT_SHA1, "x509-fingerprint-sha1": m.CERT_SHA1, "cert-sha1": m.CERT_SHA1,
    "cert_sha256": m.CERT_SHA256, "x509-fingerprint-sha256": m.CERT_SHA256,
    "cert-sha256": m.CERT_SHA256, "cert_hash": "cert", "cert-hash": "cert", "cert": "cert",
    "ja3": m.JA3, "ja3-fingerprint-md5": m.JA3, "ja3s": m.JA3S, "ja3s-fingerprint-md5": m.JA3S,
    "ja4": m.JA4, "ip_port": m.IP_PORT, "ip-port": m.IP_PORT, "endpoint": m.IP_PORT,
    "path": m.PATH, "uri_path": m.PATH, "url_path": m.PATH,
    "domain_port": m.DOMAIN_PORT, "domain-port": m.DOMAIN_PORT, "hostname|port": m.DOMAIN_PORT,
    "domain|port": m.DOMAIN_PORT, "hostname_port": m.DOMAIN_PORT,
    "spki": m.SPKI, "spki_sha256": m.SPKI, "spki-sha256": m.SPKI, "pin-sha256": m.SPKI,
    "keyword": m.KEYWORD,
}

#: Types that are well formed but describe nothing a network sensor sees: counted, not errors.
UNSUPPORTED_TYPES = frozenset({
    "md5", "sha1", "sha256", "sha512", "ssdeep", "imphash", "tlsh", "filename", "file",
    "email", "email-src", "email-dst", "email-addr", "user-agent", "mutex", "regkey",
    "x509-fingerprint-md5", "software", "user_name", "file_hash", "file_name", "pubkey_hash",
    "yara", "snort", "sigma", "text", "comment", "other", "asn", "as", "port",
})


def classify(raw: str, hint: str | None) -> tuple[str, str, int] | str:
    """``(kind, value, flags)`` of one indicator text, or a reason why it is refused.

    ``flags`` has :data:`WILDCARD` for ``*.`` domains. With ``hint`` None the kind is guessed
    from the shape of the text; a bare 32-hex value is refused (JA3 or JA3S cannot be told
    apart: write ``ja3:`` or ``ja3s:``).
    """
    s = raw.strip()
    if not s:
        return "empty value"
    if len(s) > MAX_VALUE:
        return f"value longer than {MAX_VALUE} characters"
    if hint is None or hint == m.DOMAIN:
        low = s.lower()
        if _PLAIN_DOMAIN.fullmatch(low):  # the common case, ~5x faster than the general path
            return m.DOMAIN, low[:-1] if low.endswith(".") else low, 0
    s = refang(s)
    if hint is None or hint == m.DOMAIN:
        got = adblock(s)
        if got is not None:
            return got
    if hint is None:
        head, sep, rest = s.partition(":")
        if sep and head.lower() in TYPE_NAMES and not rest.startswith("//"):
            hint, s = TYPE_NAMES[head.lower()], rest.strip()
    if hint is None:
        return _guess(s)
    return _typed(hint, s)


WILDCARD = 2

_ADBLOCK_NAME = re.compile(r"\|\|([^/^$|*@]+)\^")


def adblock(value: str) -> tuple[str, str, int] | str | None:
    """An adblock/AdGuard-style rule: ``||name^`` is a domain indicator (the name and its
    subdomains, as the blocklists mean it); any other rule (``@@`` exceptions, ``$`` options,
    paths, ``|`` anchors, ``*``) is refused with the reason. None: not adblock syntax."""
    s = value.strip()
    if not (s.startswith(("||", "@@", "|")) or s.endswith("^") or "^$" in s):
        return None
    found = _ADBLOCK_NAME.fullmatch(s)
    if found is not None:
        d = _feed_domain(found.group(1))
        if isinstance(d, str):
            return d
        if "." not in d[0]:
            return f"single-label name {d[0][:80]!r} would match a whole TLD"
        return m.DOMAIN, d[0], 0
    if s.startswith("@@"):
        return f"an adblock exception rule (@@), not an indicator: {s[:80]!r}"
    return ("adblock rule syntax iocwatch does not read (only ||name^ loads, as a domain):"
            f" {s[:80]!r}")


def ip_port(value: str) -> tuple[str, int] | None:
    """``(canonical address, port)`` of ``a.b.c.d:port`` or ``[v6]:port``, else None."""
    s = value.strip()
    if s.startswith("["):
        end = s.find("]:")
        if end == -1:
            return None
        host, port = s[1:end], s[end + 2:]
    else:
        host, sep, port = s.rpartition(":")
        if not sep or ":" in host:  # a bare IPv6 address: its last group is no port
            return None
    if port_number(port) is None:
        return None
    ip = parse_ip(host)
    if ip is None or ip[2] != (32 if ip[0] == 4 else 128):
        return None
    return ip_text(*ip), int(port)  # port_number read it


def ip_port_text(address: str, port: int) -> str:
    """The one spelling of an endpoint, as indicator value and lookup key."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def endpoint_key(ip: str, port: int) -> str | None:
    """The lookup key of an observed endpoint (IPv4-mapped IPv6 as IPv4), None if no address."""
    addr = parse_ip(ip.partition("%")[0])
    if addr is None:
        return None
    if addr[0] == 6 and addr[1] >> 32 == 0xFFFF:
        addr = (4, addr[1] & 0xFFFFFFFF, 32)
    return ip_port_text(ip_text(*addr), port)


def path_keys(url: str) -> tuple[str, ...]:
    """Lookup keys of an observed URL's path, as Maltrail's sensor looks path trails up: the
    path, without its query, up to its first ``=``, its last segment (``/a/b/x.php`` ->
    ``/x.php``) and its parent directory (``/a/b``)."""
    parts = split_url(url)
    path = http_path(parts[2]) if parts is not None else None
    if path is None:
        return ()
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    keys = [path, bare]
    if "=" in path:
        keys.append(path[:path.index("=") + 1])
    if bare.count("/") > 1:
        keys += [bare[bare.rfind("/"):], bare[:bare.rfind("/")]]
    return tuple(dict.fromkeys(keys))


def http_path(value: str) -> str | None:
    """A request path as path indicators are kept and looked up: lower case, no fragment,
    no trailing ``/`` (but ``/`` itself stays, and is refused as an indicator)."""
    s = value.strip().split("#", 1)[0].lower()
    if not s.startswith("/") or any(c in s for c in " \t\r\n\x00"):
        return None
    return s.rstrip("/") or "/"


def domain_port(value: str) -> tuple[str, int, bool] | str:
    """``(name, port, wildcard)`` of ``evil.example:8443`` (or MISP's ``evil.example|8443``),
    or a reason it is not one."""
    s = value.strip()
    cut = max(s.rfind(":"), s.rfind("|"))
    host, port = s[:cut], s[cut + 1:]
    if cut < 1 or port_number(port) is None:
        return f"not a name:port: {value[:80]!r}"
    if parse_ip(host.strip("[]")) is not None:
        return f"an address:port, not a name:port: {value[:80]!r}"
    d = _feed_domain(host)
    if isinstance(d, str):
        return d
    return d[0], int(port), d[1]


#: a shorter keyword would be inside most names
MIN_KEYWORD = 3


def keyword(value: str) -> str:
    """A keyword as it is matched: lower case, and for non-ASCII the UTS 46 mapping names get
    (``ＰａｙＰａｌ`` -> ``paypal``, ``Bücher`` -> ``bücher``); ValueError with a reason."""
    s = value.strip()
    if not s.isascii():
        try:
            s = idna.uts46_remap(s.translate(_DOTS), std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise ValueError(f"not a keyword IDNA can map: {value[:80]!r}") from None
    s = s.lower()
    if len(s) < MIN_KEYWORD:
        raise ValueError(f"keyword shorter than {MIN_KEYWORD} characters would match most"
                         f" names: {value[:80]!r}")
    if len(s) > 253 or set(s) & _BAD_NAME_CHARS:
        raise ValueError(f"not a keyword of a name (space, '/', '@', ... or too long):"
                         f" {value[:80]!r}")
    return s


def _typed(kind: str, s: str) -> tuple[str, str, int] | str:
    if kind == m.KEYWORD:
        try:
            return m.KEYWORD, keyword(s), 0
        except ValueError as e:
            return str(e)
    if kind == m.IP_PORT:
        ep = ip_port(s)
        if ep is None:
            return f"not an address:port: {s[:80]!r}"
        return m.IP_PORT, ip_port_text(*ep), 0
    if kind == m.PATH:
        path = http_path(s)
        if path is None or path == "/":
            return f"not a request path (or '/', which every site has): {s[:80]!r}"
        return m.PATH, path, 0
    if kind == m.DOMAIN:
        d = _feed_domain(s)
        if isinstance(d, str):
            # a host written with its port (``c2.example:8080`` typed "domain")
            return _typed(m.DOMAIN_PORT, s) if isinstance(domain_port(s), tuple) else d
        return m.DOMAIN, ("*." if d[1] else "") + d[0], WILDCARD if d[1] else 0
    if kind in (m.IP, m.CIDR):
        ip = parse_ip(s)
        if ip is None:
            return f"not an IP address or CIDR: {s[:80]!r}"
        if ip[2] == 0:
            return f"/0 would match every address: {s[:80]!r}"
        return (m.IP if ip[2] == (32 if ip[0] == 4 else 128) else m.CIDR), ip_text(*ip), 0
    if kind == m.URL:
        parts = split_url(s)
        if parts is None:
            return f"not a URL: {s[:80]!r}"
        return m.URL, _url_text(s, parts), 0
    if kind in ("cert", m.CERT_SHA1, m.CERT_SHA256):
        h = cert_hash(s)
        if h is None or (kind != "cert" and h[0] != kind):
            return f"not a certificate {kind.removeprefix('cert_').upper()} digest: {s[:80]!r}"
        return h[0], h[1], 0
    if kind == m.DOMAIN_PORT:
        dp = domain_port(s)
        if isinstance(dp, str):
            return dp
        name, port, wild = dp
        return m.DOMAIN_PORT, ip_port_text(("*." if wild else "") + name, port), \
            WILDCARD if wild else 0
    if kind in m.FINGERPRINT_KINDS:
        fp = fingerprint(kind, s)
        if fp is None:
            return f"not a {kind.upper()} fingerprint: {s[:80]!r}"
        return kind, fp, 0
    return f"unknown indicator type {kind!r}"


def _guess(s: str) -> tuple[str, str, int] | str:
    low = s.lower()
    if "://" in low[:20]:
        return _typed(m.URL, s)
    ip = parse_ip(low)
    if ip is not None:
        if ip[2] == 0:
            return f"/0 would match every address: {s[:80]!r}"
        return (m.IP if ip[2] == (32 if ip[0] == 4 else 128) else m.CIDR), ip_text(*ip), 0
    ep = ip_port(low)
    if ep is not None:
        return m.IP_PORT, ip_port_text(*ep), 0
    h = cert_hash(low)
    if h is not None:
        return h[0], h[1], 0
    if len(low) == 32 and set(low) <= _HEX:
        return "32 hex digits: JA3 or JA3S? write ja3:VALUE or ja3s:VALUE"
    if _JA4.fullmatch(low):
        return m.JA4, low, 0
    if "/" in low:
        head, _, tail = low.partition("/")
        if tail.isdigit() and parse_ip(head) is not None:
            return f"invalid prefix length: {s[:80]!r}"
        return _typed(m.URL, s)
    if low.replace(".", "").isdigit():
        return f"not a valid IPv4 address: {s[:80]!r}"
    head, colon, port = low.rpartition(":")
    if colon and port.isdigit() and "." in head and ":" not in head:
        return _typed(m.DOMAIN_PORT, s)
    d = _feed_domain(s)
    if isinstance(d, str):
        return d
    if "." not in d[0]:
        return f"single-label name {d[0][:80]!r} would match a whole TLD; write domain:{d[0]}"
    return m.DOMAIN, ("*." if d[1] else "") + d[0], WILDCARD if d[1] else 0


def _url_text(raw: str, parts: tuple[str, str, str]) -> str:
    host, port, path = parts
    i = raw.find("://")
    scheme = raw[:i].lower() + "://" if 0 < i <= 16 else ""
    h = f"[{host}]" if ":" in host else host
    return scheme + h + (":" + port if port else "") + path


def url_key_of(value: str) -> tuple[str, str] | None:
    """``(host, key)`` of a normalised URL indicator value."""
    got = url_parts_of(value)
    return None if got is None else (got[0], got[2])


def url_parts_of(value: str) -> tuple[str, str, str] | None:
    """``(host, port, key)`` of a normalised URL indicator value; ``port`` is ``""`` for the
    scheme's default port. A URL with another port is about that port only: it is filed as
    a name:port (or address:port) indicator, not as its bare host."""
    parts = split_url(value)
    if parts is None:
        return None
    host, port, path = parts
    return host, port, host + (":" + port if port else "") + path

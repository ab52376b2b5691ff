"""The indicator set: loading (all or nothing), matching, and a cache for fast restarts.

Design, chosen by measurement (``bench/bench_indicators.py``, figures in rules/README.md):
nothing is kept as one Python object per indicator. The values are one string and an array
of offsets; the other columns (kind, flags, file, line, metadata index) are arrays, and the
metadata dicts are shared (a plain list has one for the whole file).

Names (domains and URL hosts) live in an open-addressed table of row numbers keyed by the
CRC-32 of the name, one slot per distinct name, with the rows of a name linked in row order.
Beside it, a bit filter holds every suffix of two labels or more of every name. An observed
name is matched from its shortest suffix up, and the walk stops at the first suffix no name
ends with: most names cost one CRC-32 and one bit test, whatever the list's size, and a
suffix that passes costs one table probe. Wildcard names (``*.example.com``) use a second
table of the same kind, keyed by the parent of each name of three labels or more. A
pyahocorasick automaton over the same names was slower to build and several times larger,
so it is not used. Addresses and CIDRs live in one dict per prefix length, keyed by the
network integer; URLs, certificate hashes and fingerprints in dicts. Keywords (found anywhere
inside a name, :mod:`.keywords`) are the one place an automaton pays: a substring search has
no suffix to walk, so they get a pyahocorasick automaton of their own, rebuilt from the keyword
list at every load and cache load: 0.04-0.06 s for 100,000 keywords, where unpickling a saved
automaton took 0.03 s (``bench/bench_indicators.py``), but a pickle in the cache would run
whatever code a forged file holds, and the cache stays marshal, in which no code runs.

Every structure is bytes or arrays, so the cache is a handful of buffers that load without
rebuilding anything per entry.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import socket
import stat
import struct
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from itertools import accumulate, chain, compress
from typing import Any
from zlib import crc32

from iocwatch import boundary

from . import formats, taxii
from . import model as m
from .keywords import KeywordIndex, Substring
from .model import FileSummary, Indicator, IndicatorFileError, LoadReport
from .normalise import (
    WILDCARD,
    classify,
    endpoint_key,
    fingerprint,
    ip_port_text,
    parse_ip,
    path_keys,
    url_key_of,
    url_keys,
    url_parts_of,
)

MAX_FILE = 1 << 30
MAX_SKIPPED_LISTED = 1000
#: 6: domain_port rows keyed by name:port, the spki_sha256 table, keywords; 7: URL indicators
#: on a non-default port filed as name:port (address:port) rows, not under their bare host
CACHE_VERSION = 7
#: first bytes of every indicator cache: lets a file be recognised without unmarshalling it
CACHE_MAGIC = b"iocwatch indicator cache\n\x00"
#: after the magic: format version, body length, BLAKE2b-256 of the body
_HEADER = struct.Struct("<HQ32s")
#: what version 1 (no header) started with: a marshal 19-tuple whose first item is int 1
_V1_PREFIXES = tuple(t + b"\x13" + i + b"\x01\x00\x00\x00"
                     for t in (b")", b"\xa9") for i in (b"i", b"\xe9"))

_EXACT = 1
_KIND_CODE = {k: i for i, k in enumerate(m.KINDS)}
_URL_CODE = _KIND_CODE[m.URL]

Ids = int | tuple[int, ...]


def _push(d: dict[Any, Ids], key: Any, idx: int) -> None:
    old = d.get(key)
    if old is None:
        d[key] = idx
    elif type(old) is int:
        d[key] = (old, idx)
    else:
        d[key] = (*old, idx)


def _ids(v: Ids) -> tuple[int, ...]:
    return (v,) if type(v) is int else v  # type: ignore[return-value]


#: Knuth's multiplicative constant: CRC-32 is linear, so similar names have related low
#: bits; a table slot is taken from the high bits of the product instead (else clusters)
_FIB = 0x9E3779B1


def _slot(h: int, mask: int) -> int:
    """The first slot of hash ``h`` in a table of ``mask + 1`` slots (a power of two)."""
    return (h * _FIB & 0xFFFFFFFF) * (mask + 1) >> 32


def _trimmer() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (ImportError, OSError, AttributeError):  # not glibc: nothing to call
        return None


_MALLOC_TRIM = _trimmer()


def _give_back_memory() -> None:
    """Return the load's freed heap to the system (glibc keeps it otherwise).

    A load frees about as much as it keeps (the file, its lines, one string per value);
    glibc raises its mmap threshold after big frees, so those buffers end up in the heap,
    and without a trim the set's RSS stays about 30 MB higher (measured with 1 M domains).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _array(typecode: str, data: bytes) -> array:
    a = array(typecode)
    a.frombytes(data)
    return a


class _NameIndex:
    """Build-time tables of the names (domains and URL hosts), without an object per name.

    ``table``: open addressing on the CRC-32 of a name, linear probing, at most half full;
    one slot per distinct name, holding its first row + 1 (0: empty). ``next``: per row, the
    next row + 1 of the same name (0: last), so a name listed many times (URLs of one host)
    costs one slot and never lengthens other names' probes. ``bits``: a one-hash filter with
    a bit for every suffix of two labels or more of every name (64 bits per name), so a walk
    from the shortest suffix stops at the first suffix no name ends with. ``ctab`` and
    ``cnext``: the same for names of three labels or more by their parent, for wildcard
    names (``*.example.com`` covers ``a.example.com``).
    """

    def __init__(self, count: int, rows: int, key_of: Callable[[int], bytes]) -> None:
        self.table = _empty_table(count)
        self.hashes = array("I", bytes(4 * len(self.table)))  # CRC-32 per slot
        self.tails: dict[int, int] = {}  # slot -> last row, for names filed more than once
        self.next = array("I", bytes(4 * rows))
        self.key_of = key_of
        nbytes = 8
        while nbytes < 8 * count:
            nbytes <<= 1
        self.bits = bytearray(nbytes)
        self.kids: list[tuple[int, int]] = []
        self.depths = 0  # bit d set: some name has d dots

    def add(self, key: bytes, idx: int, wild: bool,
            same: Callable[[int, int], bool] | None = None) -> bool:
        """File row ``idx`` under ``key``; False (and nothing filed) when ``same`` says an
        earlier row of that name is the same indicator."""
        tab, hashes = self.table, self.hashes
        mask = len(tab) - 1
        h = crc32(key)
        i = (h * _FIB & 0xFFFFFFFF) * (mask + 1) >> 32
        while (r := tab[i]) and (hashes[i] != h or self.key_of(r - 1) != key):
            i = (i + 1) & mask
        if r:
            return self._again(key, i, r, idx, wild, same)
        tab[i] = idx + 1
        hashes[i] = h
        dots = key.count(b".")
        self.depths |= 1 << dots
        if not dots:
            return True
        bits = self.bits
        bmask = len(bits) - 1
        bits[h >> 3 & bmask] |= 1 << (h & 7)  # the name itself, then its suffixes
        if dots == 1:
            return True
        p = key.find(46)
        parent = crc32(key[p + 1:])
        bits[parent >> 3 & bmask] |= 1 << (parent & 7)
        for _ in range(dots - 2):
            p = key.find(46, p + 1)
            hs = crc32(key[p + 1:])
            bits[hs >> 3 & bmask] |= 1 << (hs & 7)
        if not wild:
            self.kids.append((parent, idx))
        return True

    def _again(self, key: bytes, i: int, r: int, idx: int, wild: bool,
               same: Callable[[int, int], bool] | None) -> bool:
        """Row ``idx`` of a name already in slot ``i`` (first row ``r - 1``)."""
        nxt = self.next
        if same is not None:
            j = r
            while j:
                if same(j - 1, idx):
                    return False
                j = nxt[j - 1]
        last = self.tails.get(i, r - 1)
        nxt[last] = idx + 1
        self.tails[i] = idx
        if not wild:
            self._kid(key, idx)
        return True

    def _kid(self, key: bytes, idx: int) -> None:
        if key.count(b".") >= 2:
            self.kids.append((crc32(key.partition(b".")[2]), idx))

    @property
    def min_labels(self) -> int:
        d = self.depths
        return (d & -d).bit_length() if d else 0

    @property
    def max_labels(self) -> int:
        return self.depths.bit_length()

    def children(self) -> tuple[array, array]:
        """``ctab`` and ``cnext`` (empty when no name has three labels)."""
        if not self.kids:
            return array("I"), array("I")
        tab = _empty_table(len(self.kids))
        nxt = array("I", bytes(len(self.next) * 4))
        tail: dict[int, int] = {}
        hashes = array("I", bytes(4 * len(tab)))
        mask = len(tab) - 1
        key_of = self.key_of
        for h, idx in self.kids:
            i = _slot(h, mask)
            parent = None
            while r := tab[i]:
                if hashes[i] == h:
                    if parent is None:
                        parent = key_of(idx).partition(b".")[2]
                    if key_of(r - 1).partition(b".")[2] == parent:
                        break
                i = (i + 1) & mask
            if r:
                nxt[tail[i]] = idx + 1
            else:
                tab[i] = idx + 1
                hashes[i] = h
            tail[i] = idx
        return tab, nxt


def _refusal(flags: int, code: int, at_self: bool) -> str | None:
    """Why a name row does not apply to the name it is filed under (``at_self``) or to a
    subdomain of it; None when it applies. The one rule :meth:`IndicatorSet.match_name` and
    :meth:`IndicatorSet.explain_name` share."""
    if at_self:
        return "subdomains only: *.NAME does not match NAME itself" if flags & WILDCARD else None
    if flags & _EXACT:
        return "exact-only: matches the name itself, not its subdomains"
    if code == _URL_CODE:
        return "URL indicator: matches its own host, not subdomains of it"
    return None


def _row_key(value: str, code: int, flags: int) -> bytes:
    """The name a row is filed under: the domain (without ``*.``) or the URL's host."""
    if code == _URL_CODE:
        hk = url_key_of(value)
        value = hk[0] if hk is not None else ""
    elif flags & WILDCARD:
        value = value[2:]
    return value.encode("utf-8", "surrogatepass")


def _empty_table(count: int) -> array:
    size = 8
    while size < 2 * count:
        size <<= 1
    return array("I", bytes(4 * size))


def read_file(path: str) -> bytes:
    """Bytes of an indicator file, or :class:`IndicatorFileError` with a one-line reason."""
    if taxii.is_taxii(path):  # a TAXII collection: its objects as one STIX bundle
        return taxii.fetch(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IndicatorFileError(path, "is a directory")
        if st.st_size > MAX_FILE:
            raise IndicatorFileError(path, f"larger than {MAX_FILE >> 20} MiB")
        with open(path, "rb") as f:
            return f.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise IndicatorFileError(path, "no such file")
    except PermissionError:
        raise IndicatorFileError(path, "permission denied")
    except OSError as e:
        raise IndicatorFileError(path, e.strerror or str(e))


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32).digest()


def _cache_body(data: bytes) -> bytes | str:
    """The marshal body of a cache file once its header and checksum check out, else why not.

    The length in the header must be the file's remaining length, so marshal never sees a
    truncated or padded body, and the checksum must match before anything is unmarshalled.
    """
    if data.startswith(_V1_PREFIXES):
        return "written by an older iocwatch"
    if not data.startswith(CACHE_MAGIC):
        return "not an iocwatch indicator cache"
    head = data[len(CACHE_MAGIC):len(CACHE_MAGIC) + _HEADER.size]
    if len(head) < _HEADER.size:
        return "truncated header"
    version, length, checksum = _HEADER.unpack(head)
    if version != CACHE_VERSION:
        return f"cache format {version}, this iocwatch writes {CACHE_VERSION}"
    start = len(CACHE_MAGIC) + _HEADER.size
    if length != len(data) - start:
        return f"body is {len(data) - start} bytes, header says {length}"
    body = data[start:]
    if _checksum(body) != checksum:
        return "checksum mismatch"
    return body


#: address space a cache body may take as objects, beyond what the process has: per body byte
#: (marshal's densest objects, small ints in dicts, take about 10 bytes per byte of body),
#: and a fixed margin (allocator arenas)
_UNMARSHAL_PER_BYTE = 16
_UNMARSHAL_MARGIN = 256 << 20


#: marshal type codes without parts: the singletons (None, False, True, StopIteration,
#: Ellipsis), numbers, bytes and the str codes; with tuples, lists, dicts, sets and references,
#: every code but a code object's (which :func:`_check_blob` would refuse anyway: anything
#: else the cache does not hold is refused there, after a safe read)
_PLAIN_TYPES = frozenset(b"NFTS.ifgyxls") | frozenset(b"tuaAzZ")
_SINGLETONS = frozenset(b"NFTS.")  # marshal numbers none of them (FLAG_REF on one: forged)
_SIZED = frozenset(b"stuaA")  # a 4-byte length, then that many bytes
_MAX_DEPTH = 64


def _marshal_shape_ok(body: bytes) -> bool:
    """Whether ``body`` is one marshal object built only of the types a cache holds, every
    length and count within the bytes left, and every reference to an object already whole.

    CPython's ``marshal`` is not safe against forged data: a reference to a tuple still being
    read (hashed as a dict key, its empty slots and all) crashed it in the fuzzer, and a count
    beyond the data makes it allocate gigabytes first. A cache body is a few dozen objects
    (1 M domains: 68), so this walk costs well under a millisecond."""
    end = len(body)
    refs: list[bool] = []  # per FLAG_REF object: whole yet?
    # explicit stack of (items left, ref index or -1); a dict counts its items as -1 (to '0')
    stack: list[list[int]] = [[1, -1]]
    pos = 0
    try:
        while stack:
            top = stack[-1]
            if top[0] == 0:
                stack.pop()
                if top[1] >= 0:
                    refs[top[1]] = True
                continue
            code = body[pos]
            if top[0] < 0 and code == 0x30:  # a dict's end
                pos += 1
                top[0] = 0
                continue
            if top[0] > 0:
                top[0] -= 1
            pos += 1
            kind = code & 0x7F
            ref = -1
            if code & 0x80:
                if kind == 0x72 or kind in _SINGLETONS:
                    return False  # marshal numbers no reference or singleton: never written
                ref = len(refs)
                refs.append(False)
            elif kind == 0x72:  # 'r': a reference, to an object already whole
                n = int.from_bytes(body[pos:pos + 4], "little")
                if pos + 4 > end or n >= len(refs) or not refs[n]:
                    return False
                pos += 4
                continue
            count = -2
            if kind in _PLAIN_TYPES:
                if kind == 0x69:  # 'i'
                    pos += 4
                elif kind == 0x67:  # 'g'
                    pos += 8
                elif kind == 0x79:  # 'y': a complex, two binary floats
                    pos += 16
                elif kind == 0x78:  # 'x': a complex, two floats as text
                    pos += 1 + body[pos]
                    pos += 1 + body[pos]
                elif kind == 0x66:  # 'f': a float as text, one length byte
                    pos += 1 + body[pos]
                elif kind == 0x6C:  # 'l': a digit count (signed), two bytes a digit
                    n = int.from_bytes(body[pos:pos + 4], "little", signed=True)
                    pos += 4 + 2 * abs(n)
                elif kind in _SIZED:
                    pos += 4 + int.from_bytes(body[pos:pos + 4], "little")
                elif kind in (0x7A, 0x5A):  # 'z', 'Z': one length byte
                    pos += 1 + body[pos]
            elif kind in (0x28, 0x5B, 0x3C, 0x3E):  # '(', '[', '<', '>': a 4-byte count
                count = int.from_bytes(body[pos:pos + 4], "little")
                pos += 4
            elif kind == 0x29:  # ')': a one-byte count
                count = body[pos]
                pos += 1
            elif kind == 0x7B:  # '{'
                count = -1
            else:
                return False  # code objects, the NULL marker outside a dict, unknown codes
            if pos > end or count > end - pos:
                return False
            if count == -2:
                if ref >= 0:
                    refs[ref] = True
            else:
                if len(stack) > _MAX_DEPTH:
                    return False
                stack.append([count, ref])
        return pos == end
    except IndexError:
        return False


def _unmarshal(body: bytes) -> Any:
    """``marshal.loads`` (of a body :func:`_marshal_shape_ok` accepted) under an address-space
    limit sized by the body: a count within the body can still ask for several bytes of
    objects per byte; past the limit that is a MemoryError, not a process the kernel kills.
    Without the limit when the process has other threads (their allocations would meet it
    too) or a lower limit already."""
    import resource
    import threading

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return marshal.loads(body)
    cap = used + _UNMARSHAL_PER_BYTE * len(body) + _UNMARSHAL_MARGIN
    if (threading.active_count() > 1 or (soft != resource.RLIM_INFINITY and soft <= cap)
            or (hard != resource.RLIM_INFINITY and hard < cap)):
        return marshal.loads(body)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        return marshal.loads(body)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def frame_cache_body(body: bytes) -> bytes:
    """A cache file's bytes for a marshal ``body``: magic, header, body (fuzzers use it too,
    to reach the checks behind the checksum)."""
    return CACHE_MAGIC + _HEADER.pack(CACHE_VERSION, len(body), _checksum(body)) + body


def is_cache_file(path: str) -> bool:
    """Whether ``path`` is an indicator cache iocwatch wrote (any version), so that
    ``--ioc-cache`` may replace it. Reads the first bytes only; never unmarshals."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(CACHE_MAGIC))
    except OSError:
        return False
    return head.startswith(CACHE_MAGIC) or head.startswith(_V1_PREFIXES)


def check_cache_path(path: str) -> None:
    """:class:`IndicatorFileError` unless ``path`` is absent, empty or an iocwatch cache."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IndicatorFileError(path, "is a directory, not an indicator cache")
    if stat.S_ISREG(st.st_mode) and st.st_size and not is_cache_file(path):
        raise IndicatorFileError(path, "exists and is not an iocwatch indicator cache; "
                                 "refusing to overwrite it")


class _Builder:
    """Columns under construction; nothing here is visible until :meth:`build`."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.kinds = bytearray()
        self.flags = bytearray()
        self.file_idx = array("I")
        self.lines = array("I")
        self.meta_idx = array("I")
        self.metas: list[dict[str, Any]] = []
        self.meta_ids: dict[int, int] = {}
        self.files: list[str] = []


class _FileSink:
    """Collects one file's entries into the builder and its problems into the report."""

    def __init__(self, b: _Builder, report: LoadReport, summary: FileSummary,
                 extra_files: list[tuple[str, str]]) -> None:
        self.b = b
        self.report = report
        self.summary = summary
        self.fidx = len(b.files)
        b.files.append(summary.path)
        self.listed = 0
        self.kept = 0
        self.skipped_kept = 0
        self.unsupported_types: Counter[str] = Counter()
        self.extra_files = extra_files
        self.last_meta: dict[str, Any] | None = None
        self.last_mi = 0
        self.details: dict[str, str] = {}
        self.first_row = len(b.values)  # rows from here on are this file's
        self.own = len(extra_files) - 1  # this file's (path, digest) in the sources

    @property
    def path(self) -> str:
        return self.summary.path

    def volatile(self) -> None:
        """What loads from this file depends on the time or a server: never from a cache."""
        self.extra_files[self.own] = (self.extra_files[self.own][0], "volatile")

    def add(self, raw: str, hint: str | None, line: int, meta: dict[str, Any],
            exact: bool) -> None:
        try:
            got = classify(raw, hint)
        except Exception as e:  # boundary: one value that breaks normalisation costs itself
            self.skip(line, f"unreadable value ({boundary.classify(e)})", m.R_ERROR)
            return
        if isinstance(got, str):
            self.skip(line, got, m.R_TYPE if got.startswith("unknown indicator type")
                      else m.R_VALUE, (raw,))
            return
        kind, value, flags = got
        if exact and not flags & WILDCARD and kind != m.KEYWORD:  # a keyword is a substring
            flags |= _EXACT
        b = self.b
        if meta is self.last_meta:
            mi = self.last_mi
        else:
            mi = b.meta_ids.get(id(meta))
            if mi is None:
                mi = b.meta_ids[id(meta)] = len(b.metas)
                b.metas.append(meta)
            self.last_meta, self.last_mi = meta, mi
        b.values.append(value)
        b.kinds.append(_KIND_CODE[kind])
        b.flags.append(flags)
        b.file_idx.append(self.fidx)
        b.lines.append(line if 0 <= line <= 0xFFFFFFFF else 0)
        b.meta_idx.append(mi)

    def add_names(self, names: list[str], first_line: int, meta: dict[str, Any],
                  exact: bool) -> None:
        n = len(names)
        if not n:
            return
        b = self.b
        mi = b.meta_ids.get(id(meta))
        if mi is None:
            mi = b.meta_ids[id(meta)] = len(b.metas)
            b.metas.append(meta)
        b.values += names
        b.kinds += bytes((_KIND_CODE[m.DOMAIN],)) * n
        b.flags += bytes((_EXACT if exact else 0,)) * n
        b.file_idx += array("I", (self.fidx,)) * n
        b.lines.extend(range(first_line, first_line + n))
        b.meta_idx += array("I", (mi,)) * n

    def _count(self, why: str) -> None:
        reasons = self.summary.reasons
        reasons[why] = reasons.get(why, 0) + 1

    def _list(self, line: int, reason: str) -> None:
        if self.listed < MAX_SKIPPED_LISTED:
            self.report.skipped.append((self.summary.path, line, reason))
        self.listed += 1

    def skip(self, line: int, reason: str, why: str = m.R_MALFORMED,
             values: tuple[str, ...] = ()) -> None:
        """A bad entry, counted under ``why``; ``values``: its text, kept (capped per file,
        each cut to 256 characters) so that ``iocwatch explain`` can say why it did not load."""
        if why in m.DOCUMENT_REASONS and why != m.R_BINARY:
            self.details[why] = reason
        self.report.skipped_total += 1
        self._count(why)
        self._list(line, reason)
        if values and self.skipped_kept < MAX_SKIPPED_LISTED:
            self.skipped_kept += 1
            self.report.not_loaded.append((self.summary.path, line, reason,
                                           tuple(v[:256] for v in values)))

    def unsupported(self, line: int, what: str, listed: bool = False,
                    why: str = m.R_UNSUPPORTED, values: tuple[str, ...] = ()) -> None:
        """Counted once, as unsupported; ``listed`` also shows it in the listing."""
        self.report.unsupported += 1
        self._count(why)
        self._keep(line, why, values)
        if listed:
            self._list(line, what)
        else:
            self.unsupported_types[what] += 1

    def ignore(self, line: int, why: str, values: tuple[str, ...] = ()) -> None:
        """Deliberately not loaded (MISP ``to_ids`` unset, deleted, revoked): counted once."""
        self.report.ignored += 1
        self._count(why)
        self._keep(line, why, values)

    def _keep(self, line: int, why: str, values: tuple[str, ...]) -> None:
        """The values of an entry not loaded, for ``iocwatch explain`` (capped per file)."""
        if values and self.kept < MAX_SKIPPED_LISTED:
            self.kept += 1
            self.report.not_loaded.append((self.summary.path, line, why, tuple(values)))

    def comment(self) -> None:
        self.summary.comments += 1

    def warn(self, text: str) -> None:
        self.report.warnings.append(f"{self.summary.path}: {text}")

    def read_sibling(self, name: str) -> bytes | None:
        path = formats.sibling(self.summary.path, name)
        if path is None:
            return None
        try:
            data = read_file(path)
        except IndicatorFileError:
            return None
        self.extra_files.append((path, _digest(data)))
        return data

    def finish(self, noun: tuple[str, str]) -> None:
        """Warnings for the file; :class:`IndicatorFileError` if it has content but nothing
        loaded from it (binary, invalid JSON, only bad lines): never a silent empty list.

        A file without entries (empty, only comments, a bundle without indicators) is a
        legitimate empty list: a warning, not an error.
        """
        path, summary = self.summary.path, self.summary
        summary.loaded = len(self.b.values) - self.first_row
        for why, n in summary.reasons.items():
            report_reasons = self.report.reasons
            report_reasons[why] = report_reasons.get(why, 0) + n
        if summary.loaded == 0 and summary.reasons:
            raise IndicatorFileError(path, "no usable indicators: "
                                     + describe_reasons(summary, noun, self.details))
        if self.listed > MAX_SKIPPED_LISTED:
            self.report.warnings.append(
                f"{path}: {self.listed - MAX_SKIPPED_LISTED} more skipped entries not listed")
        if self.unsupported_types:
            kinds = ", ".join(f"{k} ({n})" for k, n in self.unsupported_types.most_common(8))
            self.report.warnings.append(
                f"{path}: {sum(self.unsupported_types.values())} entries of types"
                f" iocwatch cannot observe: {kinds}")
        ignored = {w: n for w, n in summary.reasons.items() if w in m.IGNORED_REASONS}
        if ignored:
            self.report.warnings.append(
                f"{path}: not loaded: " + ", ".join(f"{_n(n, noun)} {w}" for w, n in ignored.items()))
        if summary.loaded == 0:
            what = "only comments" if summary.comments else "empty"
            self.report.warnings.append(f"{path}: no indicators ({what})")


def describe_reasons(summary: FileSummary, noun: tuple[str, str],
                     details: dict[str, str] | None = None) -> str:
    """``412 lines not a domain, ..., 3 comment lines``: why nothing of a file loaded.

    A reason that refuses the whole document is shown once, with its detail when known.
    """
    parts = []
    for why, n in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        if why in m.DOCUMENT_REASONS:
            parts.append((details or {}).get(why, why))
        else:
            parts.append(f"{_n(n, noun)} {why}")
    if summary.comments:
        parts.append(_n(summary.comments, ("comment line", "comment lines")))
    return ", ".join(parts)


#: what an entry of each format is called in messages
NOUNS: dict[str, tuple[str, str]] = {
    "plain": ("line", "lines"), "csv": ("row", "rows"), "zeek": ("line", "lines"),
    "stix": ("entry", "entries"), "misp": ("attribute", "attributes"),
    "maltrail": ("trail", "trails"), "warninglist": ("entry", "entries")}
ENTRIES = ("entry", "entries")


def _n(count: int, noun: tuple[str, str]) -> str:
    return f"{count} {noun[count != 1]}"


class IndicatorSet:
    """An immutable set of indicators; build a new one to reload and swap the reference."""

    __slots__ = ("_text", "_offs", "_kinds", "_flags", "_file_idx", "_lines", "_meta_idx",
                 "_metas", "_files", "_nbits", "_nmask", "_plain", "_ntab", "_nhash", "_nnext",
                 "_ctab", "_cnext", "_min_labels", "_max_labels", "_v4", "_v6", "_v4_plens",
                 "_v6_plens", "_urls", "_certs", "_fps", "_key", "_report", "_dead", "_ports",
                 "_paths", "_dports", "_keywords", "_kw", "keyword_scan")

    def __init__(self) -> None:
        self._text = ""
        self._offs = array("Q", [0])
        self._kinds = bytearray()
        self._flags = bytearray()
        self._file_idx = array("I")
        self._lines = array("I")
        self._meta_idx = array("I")
        self._metas: list[dict[str, Any]] = []
        self._files: list[str] = []
        self._nbits = bytes(8)
        self._nmask = 7
        self._plain = True  # no one-label name: a name whose filter bit is unset has no hit
        self._ntab = array("I", bytes(32))  # eight empty slots: a probe ends at once
        self._nhash = array("I", bytes(32))
        self._nnext = array("I")
        self._ctab = array("I")
        self._cnext = array("I")
        self._min_labels = 0
        self._max_labels = 0
        self._v4: dict[int, dict[int, Ids]] = {}
        self._v6: dict[int, dict[int, Ids]] = {}
        self._v4_plens: list[int] = []
        self._v6_plens: list[int] = []
        self._urls: dict[str, Ids] = {}
        self._certs: dict[str, Ids] = {}
        self._fps: dict[str, dict[str, Ids]] = {k: {} for k in m.FINGERPRINT_KINDS}
        self._key: tuple[Any, ...] = ()
        self._report = LoadReport()
        self._dead: set[int] = set()
        self._ports: dict[str, Ids] = {}  # "addr:port" -> rows (kind ip_port)
        self._paths: dict[str, Ids] = {}  # request path -> rows (kind path)
        self._dports: dict[str, Ids] = {}  # "name:port" -> rows (kind domain_port)
        self._keywords: dict[str, Ids] = {}  # keyword -> rows (kind keyword)
        self._kw: KeywordIndex | None = None  # their automaton; None: no keyword loaded
        #: the keyword scan of a normalised name (:meth:`.keywords.KeywordIndex.scan`), or
        #: None when no keyword is loaded: the matcher then does nothing more per name (a
        #: plain attribute, not a property: it is read once per record)
        self.keyword_scan: Callable[[str], tuple[Substring, ...]] | None = None

    # ------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, paths: list[str], fmt: str | None = None, *, misp_all: bool = False,
             exact: Collection[str] = ()) -> tuple[IndicatorSet, LoadReport]:
        """Read every file and return a complete new set, or raise; never a partial set.

        A file that cannot be read, or from which nothing loads although it has content
        (binary, invalid JSON, only bad lines), raises :class:`IndicatorFileError` (the
        caller keeps its old set). Other bad content is counted in the report and skipped.
        ``fmt`` forces one of :data:`model.FORMATS` for all files; paths in ``exact``
        (as given) load as exact-only.
        """
        if fmt is not None and fmt not in m.FORMATS:
            raise ValueError(f"unknown indicator format {fmt!r}; one of {', '.join(m.FORMATS)}")
        report = LoadReport()
        b = _Builder()
        sources: list[tuple[str, str]] = []
        exact_set = {os.path.abspath(p) for p in exact}
        datas = [(p, read_file(p)) for p in paths]  # all readable before anything is parsed
        for path, data in datas:
            digest = _digest(data)
            sources.append((os.path.abspath(path), digest))
            summary = FileSummary(path=path, fmt=fmt or "", digest=digest)
            report.files.append(summary)
            sink = _FileSink(b, report, summary, sources)
            if taxii.is_taxii(path):
                sink.volatile()
            text = formats.decode(data)
            if text is None:
                summary.error = "binary file"
                sink.skip(0, "binary file, not an indicator list", m.R_BINARY)
                sink.finish(ENTRIES)
                continue
            summary.fmt = fmt or formats.detect(text)
            file_exact = os.path.abspath(path) in exact_set
            try:  # boundary per reader: a bug in one costs the rest of that file, counted
                if summary.fmt == "misp":
                    formats.read_misp(text, sink, file_exact, misp_all)
                else:
                    formats.READERS[summary.fmt](text, sink, file_exact)
            except Exception as e:
                sink.skip(0, f"reading stopped ({boundary.classify(e)})", m.R_ERROR)
            sink.finish(NOUNS.get(summary.fmt, ENTRIES))
        del datas
        s = cls._from_builder(b, report)
        del b
        _give_back_memory()
        report.loaded = len(s)
        if report.loaded == 0:
            report.warnings.append("the indicator set is empty: nothing will ever match")
        s._key = cls._cache_key(paths, fmt, misp_all, exact) + (tuple(sources),)
        s._report = report
        return s, report

    @staticmethod
    def _cache_key(paths: Iterable[str], fmt: str | None, misp_all: bool,
                   exact: Collection[str]) -> tuple[Any, ...]:
        return (CACHE_VERSION, tuple(os.path.abspath(p) for p in paths), fmt or "",
                bool(misp_all), tuple(sorted(os.path.abspath(p) for p in exact)))

    @classmethod
    def _from_builder(cls, b: _Builder, report: LoadReport) -> IndicatorSet:
        s = cls()
        s._kinds, s._flags = b.kinds, b.flags
        s._file_idx, s._lines, s._meta_idx = b.file_idx, b.lines, b.meta_idx
        s._metas, s._files = b.metas, b.files
        dups = s._index(b.values)
        # the values become one string and its offsets: no object per indicator
        s._text = "".join(b.values)
        s._offs = array("Q", accumulate(map(len, b.values), initial=0))
        b.values = []
        if dups:  # rows repeating an earlier row of their file stay, unreachable
            report.duplicates += len(dups)
            for i in dups:
                report.files[s._file_idx[i]].loaded -= 1
            s._dead = dups
        return s

    def _index(self, values: list[str]) -> set[int]:
        """Build the lookup tables; returns rows repeating an earlier row of the same file.

        Names (domains and URL hosts) go to :class:`_NameIndex`; the other kinds to dicts.
        """
        v4: dict[int, dict[int, Ids]] = {}
        v6: dict[int, dict[int, Ids]] = {}
        urls: dict[str, Ids] = {}
        certs: dict[str, Ids] = {}
        fps: dict[str, dict[str, Ids]] = {k: {} for k in m.FINGERPRINT_KINDS}
        keyed: dict[str, dict[str, Ids]] = {m.IP_PORT: {}, m.PATH: {}, m.DOMAIN_PORT: {},
                                            m.KEYWORD: {}}
        kinds, codes, flags, fidx = m.KINDS, self._kinds, self._flags, self._file_idx
        dups: set[int] = set()

        def key_of(r: int) -> bytes:
            return _row_key(values[r], codes[r], flags[r])

        names = _NameIndex(codes.count(_KIND_CODE[m.DOMAIN]) + codes.count(_URL_CODE),
                           len(values), key_of)

        def same(j: int, idx: int) -> bool:
            return (values[j] == values[idx] and codes[j] == codes[idx]
                    and flags[j] == flags[idx] and fidx[j] == fidx[idx])

        def repeated(d: dict[Any, Ids], key: Any, idx: int) -> bool:
            old = d.get(key)
            if old is None:
                return False
            for j in _ids(old):
                if same(j, idx):
                    dups.add(idx)
                    return True
            return False

        def ip_slot(text: str) -> tuple[dict[int, Ids], int]:
            ver, net, plen = parse_ip(text)  # type: ignore[misc]  # values are canonical
            bits = 32 if ver == 4 else 128
            return (v4 if ver == 4 else v6).setdefault(plen, {}), net >> (bits - plen)

        domain_code, add_name = _KIND_CODE[m.DOMAIN], names.add
        for idx, value in enumerate(values):
            if codes[idx] == domain_code:  # most rows: kept short
                wild = flags[idx] & WILDCARD
                try:
                    key = (value[2:] if wild else value).encode()
                except UnicodeEncodeError:
                    key = (value[2:] if wild else value).encode("utf-8", "surrogatepass")
                if not add_name(key, idx, bool(wild), same):
                    dups.add(idx)
                continue
            kind = kinds[codes[idx]]
            if kind in (m.IP, m.CIDR):
                table, key = ip_slot(value)
                if not repeated(table, key, idx):
                    _push(table, key, idx)
            elif kind == m.URL:
                hk = url_parts_of(value)
                if hk is None or repeated(urls, hk[2], idx):
                    continue
                host, port, key = hk
                _push(urls, key, idx)
                if port:  # a URL on another port is about that port: a name:port indicator
                    if parse_ip(host) is not None:
                        _push(keyed[m.IP_PORT], ip_port_text(host, int(port)), idx)
                    else:
                        _push(keyed[m.DOMAIN_PORT], f"{host}:{port}", idx)
                elif parse_ip(host) is not None:
                    table, key = ip_slot(host)
                    _push(table, key, idx)
                else:
                    names.add(host.encode("utf-8", "surrogatepass"), idx, False)
            elif kind in (m.CERT_SHA1, m.CERT_SHA256):
                if not repeated(certs, value, idx):
                    _push(certs, value, idx)
            elif kind in keyed:
                # name:port rows are filed without their ``*.``, as domains
                key = value[2:] if kind == m.DOMAIN_PORT and flags[idx] & WILDCARD else value
                if not repeated(keyed[kind], key, idx):
                    _push(keyed[kind], key, idx)
            elif not repeated(fps[kind], value, idx):
                _push(fps[kind], value, idx)
        self._nbits, self._ntab, self._nnext = bytes(names.bits), names.table, names.next
        self._nhash = names.hashes
        self._ctab, self._cnext = names.children()
        self._min_labels, self._max_labels = names.min_labels, names.max_labels
        del names  # its build-only columns (tails, children list) go now
        self._urls, self._certs, self._fps = urls, certs, fps
        self._v4, self._v6 = v4, v6
        self._ports, self._paths = keyed[m.IP_PORT], keyed[m.PATH]
        self._dports, self._keywords = keyed[m.DOMAIN_PORT], keyed[m.KEYWORD]
        self._finish_index()
        return dups

    def _finish_index(self) -> None:
        self._nmask = len(self._nbits) - 1
        self._plain = self._min_labels != 1
        self._v4_plens = sorted(self._v4, reverse=True)
        self._v6_plens = sorted(self._v6, reverse=True)
        self._kw = KeywordIndex(self._keywords) if self._keywords else None
        self.keyword_scan = self._kw.scan if self._kw is not None else None

    # ------------------------------------------------------------------------ matching

    def __len__(self) -> int:
        return len(self._kinds) - len(self._dead)

    @property
    def report(self) -> LoadReport:
        """The report of the load this set came from (also kept through the cache)."""
        return self._report

    def _value(self, i: int) -> str:
        return self._text[self._offs[i]:self._offs[i + 1]]

    def _name_key(self, i: int) -> bytes:
        """The name row ``i`` is filed under: the domain (without ``*.``) or the URL's host."""
        return _row_key(self._value(i), self._kinds[i], self._flags[i])

    def _indicator(self, i: int) -> Indicator:
        return Indicator(value=self._value(i), kind=m.KINDS[self._kinds[i]],
                         file=self._files[self._file_idx[i]], line=self._lines[i],
                         meta=dict(self._metas[self._meta_idx[i]]),
                         exact=bool(self._flags[i] & _EXACT))

    def _domain_hits(self, key: bytes, h: int, at_self: bool, out: list[Indicator]) -> None:
        """Rows filed under ``key`` (its CRC-32 ``h``) that apply to the name or a subdomain."""
        tab, hashes = self._ntab, self._nhash
        mask = len(tab) - 1
        i = (h * _FIB & 0xFFFFFFFF) * (mask + 1) >> 32
        while r := tab[i]:
            if hashes[i] == h and self._name_key(r - 1) == key:
                self._rows(r, at_self, out)
                return
            i = (i + 1) & mask

    def _rows(self, r: int, at_self: bool, out: list[Indicator]) -> None:
        """The rows of the list starting at row ``r - 1`` that apply to the name (``at_self``)
        or to a subdomain of it."""
        flags, kinds, nxt = self._flags, self._kinds, self._nnext
        last = 0
        while r > last:  # a row list only goes forward: a forged one ends here
            last = r
            row = r - 1
            if _refusal(flags[row], kinds[row], at_self) is None:
                out.append(self._indicator(row))
            r = nxt[row]

    def explain_name(self, name: str) -> list[tuple[str, list[tuple[Indicator, str | None]]]]:
        """For ``iocwatch explain``: every label suffix of an already normalised name,
        longest first, with the indicators filed under it and, for each, None when it
        applies to the name or the reason it does not (the rule :meth:`match_name` applies).

        Every suffix is probed (no filter shortcut): slower than :meth:`match_name`, and
        meant for one name at a time. A wildcard name's children come last, under ``*.``.
        """
        b = name.encode("utf-8", "surrogatepass")
        out: list[tuple[str, list[tuple[Indicator, str | None]]]] = []
        start = 0
        while True:
            key = b[start:]
            rows: list[tuple[Indicator, str | None]] = []
            self._filed(key, start == 0, rows)
            out.append((key.decode("utf-8", "surrogatepass"), rows))
            dot = b.find(46, start)
            if dot < 0:
                break
            start = dot + 1
        if name.startswith("*.") and self._ctab:
            out.append((name, [(i, None) for i in self._children_of(b[2:])]))
        return out

    def _filed(self, key: bytes, at_self: bool, out: list[tuple[Indicator, str | None]]) -> None:
        """Rows filed under ``key`` with :func:`_refusal`'s verdict for the name."""
        tab, hashes = self._ntab, self._nhash
        mask = len(tab) - 1
        h = crc32(key)
        i = _slot(h, mask)
        while r := tab[i]:
            if hashes[i] == h and self._name_key(r - 1) == key:
                last = 0
                while r > last:
                    last = r
                    row = r - 1
                    out.append((self._indicator(row),
                                _refusal(self._flags[row], self._kinds[row], at_self)))
                    r = self._nnext[row]
                return
            i = (i + 1) & mask

    def match_name(self, name: str) -> list[Indicator]:
        """Indicators matching an already normalised name (see :func:`normalise_name`).

        A domain indicator matches the name and its subdomains at label boundaries,
        ``*.d`` subdomains only, exact ones the name only, URL indicators their host only.
        A wildcard name (``*.evil.com`` from a certificate) also matches indicators one
        label below it, which the certificate covers.

        The suffixes are tried shortest first, and the walk stops at the first one that ends
        no indicator (the filter holds every suffix of two labels or more of every name): most
        names cost one CRC-32 and one bit test. Hits are listed longest suffix first.
        """
        try:
            b = name.encode()
        except UnicodeEncodeError:  # a lone surrogate: filed the same way
            b = name.encode("utf-8", "surrogatepass")
        p = b.rfind(46)
        found: list[list[Indicator]] = []
        if p >= 0:  # the common path: one CRC-32 and one bit test for most names
            q = b.rfind(46, 0, p)
            h = crc32(b[q + 1:])
            if self._nbits[h >> 3 & self._nmask] >> (h & 7) & 1:
                self._walk(b, p, q, h, found)
            elif self._plain:
                # no name ends with these two labels, so none is below the name either
                # (the wildcard children of *.a.b have three labels or more, ending in a.b)
                return found
        if self._min_labels == 1:  # a one-label indicator: no filter bit for it
            tld = b[p + 1:]
            out: list[Indicator] = []
            self._domain_hits(tld, crc32(tld), p < 0, out)
            if out:
                found.insert(0, out)
        if name.startswith("*.") and self._ctab:
            found.insert(0, self._children_of(b[2:]))
        if not found:
            return []
        return list(chain.from_iterable(reversed(found)))

    def _walk(self, b: bytes, p: int, q: int, h: int, found: list[list[Indicator]]) -> None:
        """Hits of the suffixes of two labels or more, shortest first, into ``found``; the
        caller saw the two-label suffix (from ``q``, of CRC ``h``) pass the filter."""
        bits, bmask = self._nbits, self._nmask
        tab, hashes = self._ntab, self._nhash
        mask = len(tab) - 1
        maxl = self._max_labels
        k = 2
        while True:
            i = (h * _FIB & 0xFFFFFFFF) * (mask + 1) >> 32
            while r := tab[i]:  # the table probe of _domain_hits, inline: most walks miss
                if hashes[i] == h and self._name_key(r - 1) == b[q + 1:]:
                    out: list[Indicator] = []
                    self._rows(r, q < 0, out)
                    if out:
                        found.append(out)
                    break
                i = (i + 1) & mask
            if q < 0 or k >= maxl:
                return
            p = q
            k += 1
            q = b.rfind(46, 0, p)
            h = crc32(b[q + 1:])
            if not bits[h >> 3 & bmask] >> (h & 7) & 1:
                return

    def _children_of(self, parent: bytes) -> list[Indicator]:
        """Indicators one label below ``parent``, which a wildcard name covers."""
        out: list[Indicator] = []
        tab = self._ctab
        mask = len(tab) - 1
        i = _slot(crc32(parent), mask)
        while r := tab[i]:
            if self._name_key(r - 1).partition(b".")[2] == parent:
                break
            i = (i + 1) & mask
        flags, nxt = self._flags, self._cnext
        last = 0
        while r > last:  # a row list only goes forward: a forged one ends here
            last = r
            if not flags[r - 1] & WILDCARD:
                out.append(self._indicator(r - 1))
            r = nxt[r - 1]
        return out

    def match_ip(self, ip: str) -> list[Indicator]:
        """Indicators (addresses, CIDRs, URL hosts) covering an address in text form."""
        try:
            n = int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
            return self._ip_hits(n, self._v4, self._v4_plens, 32)
        except (OSError, ValueError, TypeError):
            pass
        try:
            n = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.partition("%")[0]), "big")
        except (OSError, ValueError, TypeError, AttributeError):
            return []
        if n >> 32 == 0xFFFF:
            return self._ip_hits(n & 0xFFFFFFFF, self._v4, self._v4_plens, 32)
        return self._ip_hits(n, self._v6, self._v6_plens, 128)

    def _ip_hits(self, n: int, table: dict[int, dict[int, Ids]], plens: list[int],
                 bits: int) -> list[Indicator]:
        out: list[Indicator] = []
        for plen in plens:
            v = table[plen].get(n >> (bits - plen))
            if v is not None:
                out.extend(self._indicator(i) for i in _ids(v))
        return out

    def match_url(self, url: str) -> list[Indicator]:
        """URL indicators equal to the URL (scheme and default port aside).

        An indicator without a query also matches the same path with any query.
        """
        return self._lookup_keys(self._urls, url_keys, url) if self._urls else []

    def match_domain_port(self, name: str, port: int) -> list[Indicator]:
        """``name:port`` indicators for an already normalised name seen on a flow to
        ``port``: the name and its parents at label boundaries (``*.`` ones: parents only)."""
        table = self._dports
        if not table or not name:
            return []
        out: list[Indicator] = []
        suffix = f":{port}"
        at, own = 0, True
        while True:
            v = table.get(name[at:] + suffix)
            if v is not None:
                for i in _ids(v):
                    f = self._flags[i]
                    # on the name itself all but ``*.`` ones; on a subdomain all but exact ones
                    # and URLs (a URL is about its own host only)
                    if (not f & WILDCARD) if own else not (
                            f & _EXACT or self._kinds[i] == _URL_CODE):
                        out.append(self._indicator(i))
            dot = name.find(".", at)
            if dot < 0:
                return out
            at, own = dot + 1, False

    def explain_domain_ports(self, name: str) -> list[tuple[Indicator, int, str | None]]:
        """For ``iocwatch explain``: the name:port rows (and URLs on a non-default port) filed
        under an already normalised name or a parent of it, on any port, each with its port
        and None when it applies to the name on that port, else the reason (the rule of
        :meth:`match_domain_port`). Scans the table: meant for one name at a time."""
        out: list[tuple[Indicator, int, str | None]] = []
        for key, v in self._dports.items():
            host, _, port = key.rpartition(":")
            own = name == host
            if not port.isdigit() or not (own or name.endswith("." + host)):
                continue
            for i in _ids(v):
                why = _refusal(self._flags[i], self._kinds[i], own)
                out.append((self._indicator(i), int(port), why))
        return sorted(out, key=lambda t: (t[1], t[0].file, t[0].line))

    def domain_port_hosts(self) -> frozenset[str]:
        """The names (without ``*.``) name:port rows are filed under: a cheap first test for
        whether a name, or a parent of it, has any name:port indicator."""
        return frozenset(key.rpartition(":")[0] for key in self._dports)

    def match_cert_hash(self, hexdigest: str) -> list[Indicator]:
        """Certificate fingerprint indicators equal to a SHA-1 or SHA-256 hex digest."""
        v = self._certs.get(hexdigest.strip().lower().replace(":", ""))
        return [self._indicator(i) for i in _ids(v)] if v is not None else []

    def match_fingerprint(self, kind: str, value: str) -> list[Indicator]:
        """JA3 / JA3S / JA4 indicators equal to a fingerprint of that kind."""
        table = self._fps.get(kind)
        if not table:
            return []
        fp = fingerprint(kind, value)
        v = table.get(fp) if fp is not None else None
        return [self._indicator(i) for i in _ids(v)] if v is not None else []

    def match_ip_port(self, ip: str, port: int) -> list[Indicator]:
        """``address:port`` indicators equal to an endpoint (address in text form)."""
        key = endpoint_key(ip, port) if self._ports else None
        v = self._ports.get(key) if key is not None else None
        return [self._indicator(i) for i in _ids(v)] if v is not None else []

    def match_path(self, url: str) -> list[Indicator]:
        """Request-path indicators for the path of an observed URL (see :func:`path_keys`)."""
        return self._lookup_keys(self._paths, path_keys, url) if self._paths else []

    def keyword_hits(self, subs: Iterable[Substring]) -> list[tuple[Indicator, Substring]]:
        """The keyword indicators of what a scan found, each with where it sits."""
        table = self._keywords
        return [(self._indicator(i), sub) for sub in subs for i in _ids(table[sub.keyword])]

    def match_keywords(self, name: str) -> list[tuple[Indicator, Substring]]:
        """Keyword indicators inside an already normalised name, each with where it sits;
        every keyword found alerts (by end offset, as the automaton finds them)."""
        kw = self._kw
        return self.keyword_hits(kw.scan(name)) if kw is not None else []

    def _lookup_keys(self, table: dict[Any, Ids], keys: Any, url: str) -> list[Indicator]:
        """Indicators under any of the lookup keys of ``url``, each once, in key order."""
        out: list[Indicator] = []
        seen: set[int] = set()
        for key in keys(url):
            v = table.get(key)
            if v is not None:
                for i in _ids(v):
                    if i not in seen:
                        seen.add(i)
                        out.append(self._indicator(i))
        return out

    def __iter__(self) -> Any:
        return (self._indicator(i) for i in range(len(self._kinds)) if i not in self._dead)

    # --------------------------------------------------------------------------- cache

    def save_cache(self, path: str) -> None:
        """Write the set, its sources' digests and its report; atomic (temp file + rename).

        The file is :data:`CACHE_MAGIC`, a header (format version, body length, BLAKE2b of
        the body) and a :mod:`marshal` body (no code runs on load). Refuses to replace an
        existing file that is not an iocwatch cache (:class:`IndicatorFileError`).
        """
        check_cache_path(path)
        r = self._report
        report = ([(f.path, f.fmt, f.loaded, f.digest, f.error, f.reasons, f.comments)
                   for f in r.files], r.loaded, r.skipped, r.unsupported, r.warnings,
                  r.duplicates, r.skipped_total, r.ignored, r.reasons)
        blob = (CACHE_VERSION, self._key, report, self._text, self._offs.tobytes(),
                bytes(self._kinds), bytes(self._flags), self._file_idx.tobytes(),
                self._lines.tobytes(), self._meta_idx.tobytes(), self._metas, self._files,
                self._nbits, self._ntab.tobytes(), self._nhash.tobytes(), self._nnext.tobytes(),
                self._ctab.tobytes(), self._cnext.tobytes(),
                self._min_labels, self._max_labels, self._v4, self._v6, self._urls,
                self._certs, self._fps, self._dead, self._ports, self._paths, self._dports,
                self._keywords)
        data = frame_cache_body(marshal.dumps(blob))
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load_cache(cls, path: str, paths: list[str], fmt: str | None = None, *,
                   misp_all: bool = False, exact: Collection[str] = ()
                   ) -> tuple[IndicatorSet, LoadReport] | None:
        """The cached set if it was built from these very files and options, else None.

        Every source file (MISP event files too) is re-read and its digest compared, so
        any edit invalidates the cache, whatever the timestamps say.
        """
        got, _damage = cls._load_cache(path, paths, fmt, misp_all, exact)
        return got

    @classmethod
    def _load_cache(cls, path: str, paths: list[str], fmt: str | None, misp_all: bool,
                    exact: Collection[str]
                    ) -> tuple[tuple[IndicatorSet, LoadReport] | None, str | None]:
        """``(set and report, None)``, ``(None, None)`` when stale or absent, or
        ``(None, why)`` when the file is damaged (a warning for the operator)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None, None
        body = _cache_body(data)
        if isinstance(body, str):
            return None, body
        if not _marshal_shape_ok(body):
            return None, "unreadable (not the marshal shape of a cache)"
        try:
            blob = _unmarshal(body)  # loads() on the bytes: load() on a file is 3x slower
        except (ValueError, EOFError, TypeError, SystemError, MemoryError) as e:
            # what marshal raises for bad data (SystemError: a malformed code object), and a
            # forged count asking for more memory than the body could hold
            return None, f"unreadable ({type(e).__name__})"
        del data, body
        try:
            _check_blob(blob)
        except CacheDamaged as e:
            return None, f"inconsistent contents: {e}"
        if blob[1][:-1] != cls._cache_key(paths, fmt, misp_all, exact):
            return None, None  # built from other files or options: stale, not damaged
        try:
            for src, digest in blob[1][-1]:
                try:
                    if _digest(read_file(src)) != digest:
                        return None, None
                except IndicatorFileError:
                    return None, None
            s = cls._from_blob(blob)
            del blob
            _give_back_memory()
        except Exception as e:  # boundary: _check_blob vouched for the shape; count the rest
            return None, f"inconsistent contents ({boundary.classify(e)})"
        return (s, s._report), None

    @classmethod
    def _from_blob(cls, blob: tuple[Any, ...]) -> IndicatorSet:
        """A set from an unmarshalled cache that :func:`_check_blob` accepted."""
        s = cls()
        (_, s._key, rep, s._text, offs, kinds, flags, fidx, lines, midx, s._metas, s._files,
         s._nbits, ntab, nhash, nnext, ctab, cnext, s._min_labels, s._max_labels, s._v4,
         s._v6, s._urls, s._certs, s._fps, s._dead, s._ports, s._paths, s._dports,
         s._keywords) = blob
        s._kinds, s._flags = bytearray(kinds), bytearray(flags)
        s._offs = _array("Q", offs)
        s._file_idx, s._lines, s._meta_idx = _array("I", fidx), _array("I", lines), \
            _array("I", midx)
        s._ntab, s._nhash, s._nnext = _array("I", ntab), _array("I", nhash), \
            _array("I", nnext)
        s._ctab, s._cnext = _array("I", ctab), _array("I", cnext)
        files, loaded, skipped, unsupported, warnings, dups, total, ignored, reasons = rep
        s._report = LoadReport(files=[FileSummary(*f) for f in files], loaded=loaded,
                               skipped=[tuple(x) for x in skipped],
                               unsupported=unsupported, warnings=list(warnings),
                               duplicates=dups, skipped_total=total, ignored=ignored,
                               reasons=dict(reasons))
        s._finish_index()
        return s

    @classmethod
    def load_cached(cls, paths: list[str], fmt: str | None = None, *, cache: str,
                    misp_all: bool = False, exact: Collection[str] = ()
                    ) -> tuple[IndicatorSet, LoadReport, bool]:
        """The cached set when still valid, else a fresh load (then cached); bool: from cache.

        A cache that cannot be written is not an error: the fresh set is returned anyway. A
        damaged cache is rebuilt with one warning in the report; an existing file that is not
        an iocwatch cache is never overwritten (:class:`IndicatorFileError`).
        """
        check_cache_path(cache)  # before a long load: never overwrite an indicator feed
        got, damage = cls._load_cache(cache, paths, fmt, misp_all, exact)
        if got is not None:
            return got[0], got[1], True
        s, report = cls.load(paths, fmt, misp_all=misp_all, exact=exact)
        try:  # saved before this load's cache warnings: a cache never repeats them later
            s.save_cache(cache)
            written = None
        except OSError as e:
            written = f"{cache}: cache not written: {e.strerror or e}"
        if damage is not None:
            report.warnings.append(f"{cache}: indicator cache not usable ({damage}), rebuilt"
                                   " from the indicator files")
        if written is not None:
            report.warnings.append(written)
        return s, report, False


# ------------------------------------------------------------------ cache validation


class CacheDamaged(ValueError):
    """An unmarshalled cache body that is not what :meth:`IndicatorSet.save_cache` writes.

    The checksum only says the body is the one its writer meant; whoever can write the file
    can forge it, so every type, index and count is checked before the set is built.
    """


def _types(items: Iterable[Any]) -> set[type]:
    """The types of ``items``; ``map`` keeps the loop in C (a million items: milliseconds)."""
    return set(map(type, items))


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise CacheDamaged(what)


def _list_of(x: Any, types: set[type], what: str) -> None:
    _need(type(x) is list and _types(x) <= types, f"{what} of the wrong type")


def _counts(*xs: Any) -> bool:
    return all(type(x) is int and x >= 0 for x in xs)


def _str_counts(d: Any) -> bool:
    return (type(d) is dict and _types(d) <= {str} and _types(d.values()) <= {int}
            and (not d or min(d.values()) >= 0))


_IS_INT = {int}.__contains__
_IS_TUPLE = {tuple}.__contains__
_IS_LIST = {list}.__contains__


def _check_table(table: Any, key_types: set[type], n: int, what: str) -> None:
    """A lookup table: keys of ``key_types``, values a row or a tuple of rows below ``n``."""
    _need(type(table) is dict and _types(table) <= key_types, f"{what} table of the wrong type")
    rows: Any = table.values()
    kinds = _types(rows)
    _need(kinds <= {int, tuple}, f"{what} table of the wrong type")
    if tuple in kinds:
        many = list(compress(rows, map(_IS_TUPLE, map(type, rows))))
        _need(min(map(len, many)) >= 2 and _types(chain.from_iterable(many)) <= {int},
              f"{what} table of the wrong type")
        rows = list(chain(compress(rows, map(_IS_INT, map(type, rows))),
                          chain.from_iterable(many)))
    _need(not rows or (min(rows) >= 0 and max(rows) < n), f"{what} table: row out of range")


def _check_ip_tables(tables: Any, bits: int, n: int, what: str) -> None:
    _need(type(tables) is dict and _types(tables) <= {int}, f"{what} tables of the wrong type")
    for plen, table in tables.items():
        _need(0 <= plen <= bits, f"{what} prefix length out of range")
        _check_table(table, {int}, n, what)
        _need(not table or (min(table) >= 0 and max(table) >> plen == 0),
              f"{what} network out of range")


def _check_report(rep: Any, files: list[str], n: int, dead: set[int]) -> None:
    """The report's shape, and its counts against the columns: what a load would have said."""
    _need(type(rep) is tuple and len(rep) == 9, "report of the wrong shape")
    summaries, loaded, skipped, unsupported, warnings, dups, total, ignored, reasons = rep
    _need(_counts(loaded, unsupported, dups, total, ignored), "report counts of the wrong type")
    _list_of(warnings, {str}, "report warnings")
    _list_of(skipped, {tuple}, "report listing")
    _need(all(len(x) == 3 and type(x[0]) is str and type(x[1]) is int and type(x[2]) is str
              for x in skipped), "report listing of the wrong type")
    _list_of(summaries, {tuple}, "report files")
    by_reason: dict[str, int] = {}
    for f in summaries:
        _need(len(f) == 7 and type(f[0]) is str and type(f[1]) is str and _counts(f[2], f[6])
              and type(f[3]) is str and (f[4] is None or type(f[4]) is str)
              and _str_counts(f[5]), "report file of the wrong type")
        for why, k in f[5].items():
            by_reason[why] = by_reason.get(why, 0) + k
    _need(_str_counts(reasons), "report reasons of the wrong type")
    _need([f[0] for f in summaries] == files, "report files differ from the set's files")
    _need(loaded == n - len(dead) == sum(f[2] for f in summaries) and dups == len(dead),
          "report counts differ from the set")
    _need(by_reason == reasons and sum(reasons.values()) == total + unsupported + ignored,
          "report reasons do not add up")


def _pow2(k: int) -> bool:
    return k > 0 and not k & (k - 1)


def _check_names(nbits: Any, names: tuple[Any, Any], kids: tuple[Any, Any], minl: Any,
                 maxl: Any, n: int) -> None:
    """The name tables: sizes a mask can index, rows in range, an empty slot in every
    table (a probe ends there), label counts that agree. A row list that goes backwards is
    cut where it does by the walk itself, which is cheaper than checking every link here."""
    _need(type(nbits) is bytes and _pow2(len(nbits)), "name filter of the wrong type")
    for (tab, nxt), may_be_empty in ((names, False), (kids, True)):
        _need(type(tab) is bytes and type(nxt) is bytes, "name tables of the wrong type")
        if may_be_empty and not tab and not nxt:
            continue
        _need(len(tab) % 4 == 0 and _pow2(len(tab) // 4) and len(nxt) == 4 * n,
              "name tables of the wrong size")
        rows, links = memoryview(tab).cast("I"), memoryview(nxt).cast("I")
        _need(min(rows) == 0 and max(rows) <= n and (not n or max(links) <= n),
              "name table: row out of range")
    _need(_counts(minl, maxl) and minl <= maxl and (minl == 0) == (maxl == 0),
          "name label counts of the wrong type")


def _check_blob(blob: Any) -> None:
    """:class:`CacheDamaged` unless ``blob`` has exactly the shape ``save_cache`` writes.

    Every column, table, key and row index is checked for type and range, and the report
    against the columns, so that nothing built from it can raise later (at load, match or
    iteration time). Linear in the set's size, and kept in C loops (``map``, ``set``,
    ``min``/``max``): about 0.15 s of CPU for 1 M domains, measured on a loaded 2-core
    machine, beside 0.1 s for the checksum and under 0.05 s for ``marshal.loads`` (buffers).
    """
    _need(type(blob) is tuple and len(blob) == 30 and type(blob[0]) is int
          and blob[0] == CACHE_VERSION, "unexpected contents")
    (_, key, rep, text, offs, kinds, flags, fidx, lines, midx, metas, files,
     nbits, ntab, nhash, nnext, ctab, cnext, minl, maxl, v4, v6, urls, certs, fps, dead,
     ports, paths, dports, keywords) = blob
    _need(type(key) is tuple and len(key) > 1 and type(key[-1]) is tuple
          and all(type(x) is tuple and len(x) == 2 and _types(x) <= {str} for x in key[-1]),
          "sources of the wrong type")
    _need(type(text) is str, "values of the wrong type")
    _need(all(type(c) is bytes for c in (offs, kinds, flags, fidx, lines, midx)),
          "columns of the wrong type")
    n = len(kinds)
    _need(len(flags) == n and len(fidx) == len(lines) == len(midx) == 4 * n
          and len(offs) == 8 * (n + 1), "columns of different lengths")
    o = memoryview(offs).cast("Q")
    # offsets out of order only cut wrong values out of the text, which a forger could write
    # anyway; slicing never raises
    _need(o[0] == 0 and o[n] == len(text), "value offsets do not span the values")
    _need(type(nhash) is bytes and type(ntab) is bytes and len(nhash) == len(ntab),
          "name hashes of the wrong size")
    _check_names(nbits, (ntab, nnext), (ctab, cnext), minl, maxl, n)
    _list_of(files, {str}, "files")
    _list_of(metas, {dict}, "metadata")
    _need(_types(chain.from_iterable(metas)) <= {str}, "metadata of the wrong type")
    meta_values: Any = list(chain.from_iterable(map(dict.values, metas)))
    meta_types = _types(meta_values)
    _need(meta_types <= {str, int, list}, "metadata of the wrong type")
    if list in meta_types:
        lists = compress(meta_values, map(_IS_LIST, map(type, meta_values)))
        _need(_types(chain.from_iterable(lists)) <= {str}, "metadata of the wrong type")
    if n:
        _need(max(kinds) < len(m.KINDS) and max(memoryview(fidx).cast("I")) < len(files)
              and max(memoryview(midx).cast("I")) < len(metas), "column index out of range")
    for table, what in ((urls, "URL"), (certs, "certificate"), (ports, "address:port"),
                        (paths, "path"), (dports, "name:port"), (keywords, "keyword")):
        _check_table(table, {str}, n, what)
    _need(type(fps) is dict and set(fps) == set(m.FINGERPRINT_KINDS) and len(fps) == len(
        m.FINGERPRINT_KINDS), "fingerprint tables of the wrong type")
    for kind, table in fps.items():
        _check_table(table, {str}, n, kind)
    _check_ip_tables(v4, 32, n, "IPv4")
    _check_ip_tables(v6, 128, n, "IPv6")
    _need(type(dead) is set and _types(dead) <= {int}
          and (not dead or (min(dead) >= 0 and max(dead) < n)), "duplicate rows: wrong type or out of range")
    _check_report(rep, files, n, dead)

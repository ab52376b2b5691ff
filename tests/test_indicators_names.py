"""Name matching against a plain reading of the rules, on random overlapping lists.

The name tables (CRC-32 slots, the suffix filter, row lists, the wildcard children) are
compared, fresh and through the cache, with a reference that only applies the documented
rules to every indicator: nothing found by one and not the other, in the same order.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from iocwatch.indicators import Indicator, IndicatorSet
from iocwatch.indicators.normalise import url_key_of

LABELS = ["a", "b", "c2", "evil", "x-y", "xn--bcher-kva", "com", "org", "io"]


def _name(rng: random.Random, lo: int, hi: int) -> str:
    return ".".join(rng.choice(LABELS) for _ in range(rng.randint(lo, hi)))


def _lists(rng: random.Random, lo: int = 1) -> tuple[str, str]:
    rows = []
    for _ in range(400):
        name = _name(rng, lo, 5)
        roll = rng.random()
        if roll < 0.15:
            rows.append(f"*.{name}")
        elif roll < 0.25:
            rows.append(f"={name}")
        elif roll < 0.4:
            rows.append(f"http://{name}/p{rng.randint(0, 3)}")
        else:
            rows.append(name)
    return "\n".join(rows[:250]) + "\n", "\n".join(rows[150:]) + "\n"


def _depth(key: str) -> int:
    return key.count(".") + 1


def _reference(s: IndicatorSet, name: str) -> list[tuple[str, str, int]]:
    """Every indicator the rules say matches ``name``, longest suffix first, children last."""
    by_suffix: list[tuple[int, int, Indicator]] = []
    kids: list[Indicator] = []
    for order, ind in enumerate(s):
        if ind.kind == "url":
            hk = url_key_of(ind.value)
            if hk is not None and hk[0] == name:
                by_suffix.append((_depth(name), order, ind))
            key, wild = (hk[0] if hk else ""), False
        elif ind.kind == "domain":
            wild = ind.value.startswith("*.")
            key = ind.value[2:] if wild else ind.value
            if (name == key and not wild) or (name.endswith("." + key) and not ind.exact):
                by_suffix.append((_depth(key), order, ind))
        else:
            continue
        if (name.startswith("*.") and not wild and key.count(".") >= 2
                and key.partition(".")[2] == name[2:]):
            kids.append(ind)
    by_suffix.sort(key=lambda t: (-t[0], t[1]))
    return [(i.value, i.file, i.line) for i in [t[2] for t in by_suffix] + kids]


@pytest.mark.parametrize("lo", [1, 2])  # 2: no one-label name, the quick matcher's case
@pytest.mark.parametrize("seed", range(6))
def test_names_match_as_the_rules_say(tmp_path: Path, seed: int, lo: int) -> None:
    rng = random.Random(seed)
    one, two = _lists(rng, lo)
    paths = [tmp_path / "one.txt", tmp_path / "two.txt"]
    paths[0].write_text(one)
    paths[1].write_text(two)
    srcs = [str(p) for p in paths]
    fresh, _ = IndicatorSet.load(srcs)
    cache = str(tmp_path / "ioc.cache")
    IndicatorSet.load_cached(srcs, cache=cache)
    cached, _, from_cache = IndicatorSet.load_cached(srcs, cache=cache)
    assert from_cache
    assert fresh._plain == cached._plain == (lo == 2)
    names = [_name(rng, 1, 7) for _ in range(600)]
    names += ["*." + _name(rng, 1, 4) for _ in range(200)]
    hits = 0
    for name in names:
        want = _reference(fresh, name)
        for s in (fresh, cached):
            got = [(i.value, i.file, i.line) for i in s.match_name(name)]
            assert got == want, name
        hits += bool(want)
    assert hits > 100  # the lists overlap the names: the comparison is not vacuous


def test_a_host_with_many_urls_is_one_name(tmp_path: Path) -> None:
    """Many rows of one name share a slot: other names' probes stay short, all rows hit."""
    p = tmp_path / "urls.txt"
    p.write_text("".join(f"http://busy.example/{i}\n" for i in range(3000)) + "other.example\n")
    s, _ = IndicatorSet.load([str(p)])
    assert len(s.match_name("busy.example")) == 3000
    assert [i.value for i in s.match_name("x.other.example")] == ["other.example"]
    assert s.match_name("x.busy.example") == []  # a URL's host is matched exactly

"""The edge's status page: what it saved the mirror, why it fell back, what it serves.

Theory of operation: the figures come from the Prometheus counters themselves, so the page
and `/metrics` cannot disagree. `EdgeStatus.sample()` (every `SAMPLE_EVERY` seconds, and
before every render) reads the served-bytes and fallback counters and adds what they grew by
to the current minute of a bounded per-minute history (`MinuteHistory`: a day of minutes for
bytes, an hour for fallbacks). The examples of fallbacks (path, reason, time) are kept where
the fallback counter is incremented (`EdgeMetrics.fell_back`), in a ring buffer
(`FallbackLog`). Nothing here holds a client's address or anything secret: paths are archive
paths, the apt lines name the edge's public URL.

`render` is pure (a `StatusView` and a time in, HTML out); every value rendered goes through
`html.escape`. The page has no JavaScript: it refreshes itself with a meta refresh.
"""

from __future__ import annotations

import enum
import html
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from prometheus_client import Counter

from aptmesh_edge.decisions import FallbackReason, Outcome, SourceKind

K = TypeVar("K", bound=enum.Enum)

DAY_MINUTES = 1440
HOUR_MINUTES = 60
RECENT_FALLBACKS = 50  # examples kept
SAMPLE_EVERY = 10.0  # seconds between samples of the counters
REFRESH_SECONDS = 30  # the page's meta refresh


class MinuteHistory(Generic[K]):
    """Amounts per key per minute, for the last `minutes` minutes (older minutes drop out).
    Minutes with nothing added take no space."""

    def __init__(self, minutes: int, clock: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self._clock = clock
        self._buckets: deque[tuple[int, dict[K, int]]] = deque(maxlen=minutes)

    def add(self, key: K, amount: int) -> None:
        if amount <= 0:
            return
        minute = int(self._clock() // 60)
        if not self._buckets or self._buckets[-1][0] != minute:
            self._buckets.append((minute, {}))
        bucket = self._buckets[-1][1]
        bucket[key] = bucket.get(key, 0) + amount

    def totals(self, minutes: int) -> dict[K, int]:
        """The sums per key over the last `minutes` minutes (the current one included)."""
        first = int(self._clock() // 60) - minutes + 1
        out: dict[K, int] = {}
        for minute, bucket in self._buckets:
            if minute >= first:
                for key, amount in bucket.items():
                    out[key] = out.get(key, 0) + amount
        return out

    def series(self, minutes: int, per: int) -> list[dict[K, int]]:
        """The last `minutes` minutes in slots of `per` minutes, oldest first (the last slot
        ends with the current minute)."""
        now = int(self._clock() // 60)
        slots: list[dict[K, int]] = [{} for _ in range(minutes // per)]
        first = now - len(slots) * per + 1
        for minute, bucket in self._buckets:
            if minute < first:
                continue
            slot = slots[(minute - first) // per]
            for key, amount in bucket.items():
                slot[key] = slot.get(key, 0) + amount
        return slots


@dataclass(frozen=True)
class FallbackExample:
    at: float  # wall clock
    path: str
    reason: FallbackReason


class FallbackLog:
    """The most recent fallbacks to the upstream (at most `size`, newest last)."""

    def __init__(self, size: int = RECENT_FALLBACKS, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._entries: deque[FallbackExample] = deque(maxlen=size)

    def add(self, path: str, reason: FallbackReason) -> None:
        self._entries.append(FallbackExample(self._clock(), path, reason))

    def recent(self) -> list[FallbackExample]:
        """Newest first."""
        return list(reversed(self._entries))


def counter_values(counter: Counter, label: str) -> dict[str, float]:
    """The `_total` samples of a labelled counter by the value of `label`."""
    out: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels[label]] = sample.value
    return out


class CounterSampler(Generic[K]):
    """Feeds a `MinuteHistory` with what a counter labelled by an enum grew by since the
    last sample (counters only grow; the first sample starts from their values then)."""

    def __init__(
        self, counter: Counter, label: str, kinds: type[K], history: MinuteHistory[K]
    ) -> None:
        self._counter, self._label, self._kinds, self.history = counter, label, kinds, history
        self._last = counter_values(counter, label)

    def sample(self) -> dict[K, int]:
        """Adds the growth to the history; returns the counters' totals."""
        values = counter_values(self._counter, self._label)
        totals: dict[K, int] = {}
        for kind in self._kinds:
            value = values.get(kind.value, 0.0)
            self.history.add(kind, int(value - self._last.get(kind.value, 0.0)))
            totals[kind] = int(value)
        self._last = values
        return totals


@dataclass(frozen=True)
class EdgeLine:
    id: str
    url: str
    zone: str
    health: str


@dataclass(frozen=True)
class SwarmLine:
    torrents: int
    peers: int
    downloading: int
    seeding: int
    seeds: int  # connected peers holding the whole file, over the downloads in progress


@dataclass(frozen=True)
class CollectionLine:
    name: str
    version: int
    files_wanted: int
    files_present: int
    bytes_wanted: int
    bytes_present: int
    errors: tuple[str, ...]


@dataclass
class StatusView:
    """Everything the page shows, gathered at one moment (app.py fills it)."""

    edge_id: str
    zone: str
    public_url: str
    upstream_hosts: Sequence[str]
    served_total: Mapping[SourceKind, int]
    served_hour: Mapping[SourceKind, int]
    served_day: Mapping[SourceKind, int]
    served_hour_series: Sequence[Mapping[SourceKind, int]]
    served_day_series: Sequence[Mapping[SourceKind, int]]
    requests: Mapping[Outcome, int]
    cache_size: int
    cache_limit: int
    cache_entries: int
    fallbacks_hour: Mapping[FallbackReason, int]
    recent_fallbacks: Sequence[FallbackExample]
    edges: Sequence[EdgeLine] = ()
    registry: str = ""  # "" without a tracker
    swarm: SwarmLine | None = None
    generations: Sequence[tuple[str, datetime | None]] = ()
    collections: Sequence[CollectionLine] = ()


class EdgeStatus:
    """Owns the history behind the page: served bytes per minute over a day, fallbacks per
    minute over an hour, sampled from the counters."""

    def __init__(
        self, served: Counter, fallbacks: Counter, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.served = CounterSampler(
            served, "source", SourceKind, MinuteHistory[SourceKind](DAY_MINUTES, clock)
        )
        self.fallbacks = CounterSampler(
            fallbacks, "reason", FallbackReason, MinuteHistory[FallbackReason](HOUR_MINUTES, clock)
        )
        self.served_total: dict[SourceKind, int] = {}

    def sample(self) -> None:
        self.served_total = self.served.sample()
        self.fallbacks.sample()


# -- rendering -------------------------------------------------------------------------------

_COLOURS = {
    SourceKind.CACHE: "#2e7d32",
    SourceKind.SWARM: "#1565c0",
    SourceKind.EDGE: "#6a1b9a",
    SourceKind.UPSTREAM: "#c62828",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:8px 16px;color:#222}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.1em;margin:1em 0 .3em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:2px 6px;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-size:.9em;background:#f4f4f4;padding:2px 4px;overflow-wrap:anywhere}
pre{white-space:pre-wrap}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}
.key span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}
svg{width:100%;height:auto;background:#fafafa}
.muted{color:#666}
@media (max-width:700px){.grid{grid-template-columns:1fr}body{padding:4px 8px}
td,th{padding:2px 3px;font-size:.9em}}
"""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bytes(n: int, name: str) -> str:
    """A byte figure shown readably, its exact value in `<data>` (what the tests compare)."""
    return f'<data id="{_e(name)}" value="{n}">{_e(human_bytes(n))}</data>'


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _chart(series: Sequence[Mapping[SourceKind, int]], label: str) -> str:
    """Stacked bars per slot, one colour per source, as inline SVG."""
    width, height, slots = 600, 120, max(len(series), 1)
    top = max((sum(s.values()) for s in series), default=0) or 1
    bar = width / slots
    rects = []
    for i, slot in enumerate(series):
        y = float(height)
        for kind in SourceKind:
            amount = slot.get(kind, 0)
            if amount <= 0:
                continue
            h = amount / top * (height - 4)
            y -= h
            rects.append(
                f'<rect x="{i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{_COLOURS[kind]}">'
                f"<title>{_e(kind.value)}: {_e(human_bytes(amount))}</title></rect>"
            )
    return (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
        f"{''.join(rects)}</svg>"
        f'<p class="muted">{_e(label)}; highest bar {_e(human_bytes(top))}</p>'
    )


def _served_table(view: StatusView) -> str:
    rows = []
    for kind in SourceKind:
        cells = "".join(
            f'<td class="n">{_bytes(figures.get(kind, 0), f"served-{span}-{kind.value}")}</td>'
            for span, figures in (
                ("hour", view.served_hour),
                ("day", view.served_day),
                ("total", view.served_total),
            )
        )
        rows.append(f"<tr><td>{_e(kind.value)}</td>{cells}</tr>")
    return (
        '<table><tr><th>source</th><th class="n">last hour</th><th class="n">last day</th>'
        f'<th class="n">since start</th></tr>{"".join(rows)}</table>'
    )


def _saved(view: StatusView) -> str:
    total = sum(view.served_day.values())
    upstream = view.served_day.get(SourceKind.UPSTREAM, 0)
    saved = total - upstream
    share = f"{saved / total:.0%}" if total else "n/a"
    return (
        f"<p>Saved the mirror {_bytes(saved, 'saved-day')} in the last day "
        f'(<span id="saved-share">{_e(share)}</span> of what clients got did not come from '
        "the upstream).</p>"
    )


def _cache(view: StatusView) -> str:
    requests = sum(view.requests.values())
    hits = view.requests.get(Outcome.HIT, 0)
    hit_ratio = f"{hits / requests:.0%}" if requests else "n/a"
    served = sum(view.served_total.values())
    from_cache = view.served_total.get(SourceKind.CACHE, 0)
    byte_ratio = f"{from_cache / served:.0%}" if served else "n/a"
    outcomes = "".join(
        f'<tr><td>{_e(o.value)}</td><td class="n" id="requests-{_e(o.value)}">'
        f"{view.requests.get(o, 0)}</td></tr>"
        for o in Outcome
    )
    return (
        f"<p>Cache: {_bytes(view.cache_size, 'cache-size')} of "
        f"{_bytes(view.cache_limit, 'cache-limit')} in "
        f'<span id="cache-entries">{view.cache_entries}</span> package files. '
        f'Hit ratio: <span id="hit-ratio">{_e(hit_ratio)}</span> of requests, '
        f'<span id="byte-hit-ratio">{_e(byte_ratio)}</span> of bytes (since start).</p>'
        f'<table><tr><th>requests</th><th class="n">since start</th></tr>{outcomes}</table>'
    )


def _kind_of(reason: FallbackReason) -> str:
    if reason.by_design:
        return "by design"
    return "web seed added" if reason.web_seed else "swarm failed"


def _fallbacks(view: StatusView, now: float) -> str:
    counted = [(r, n) for r, n in view.fallbacks_hour.items() if n > 0]
    if counted:
        rows = "".join(
            f'<tr><td>{_e(r.value)}</td><td class="n" id="fallbacks-hour-{_e(r.value)}">{n}'
            f"</td><td>{_kind_of(r)}</td></tr>"
            for r, n in sorted(counted, key=lambda item: -item[1])
        )
        table = f'<table><tr><th>reason</th><th class="n">count</th><th></th></tr>{rows}</table>'
    else:
        table = '<p id="fallbacks-none">No fallback to the upstream in the last hour.</p>'
    recent = [f for f in view.recent_fallbacks if now - f.at <= HOUR_MINUTES * 60]
    examples = "".join(
        f"<tr><td>{_e(_time(f.at))}</td><td>{_e(f.reason.value)}</td><td><code>{_e(f.path)}"
        "</code></td></tr>"
        for f in recent
    )
    if examples:
        table += (
            f'<table id="fallback-examples"><tr><th>time</th><th>reason</th><th>path</th></tr>'
            f"{examples}</table>"
        )
    return table


def _edges(view: StatusView) -> str:
    if not view.edges:
        return "<p>No registry: this edge works alone.</p>"
    rows = "".join(
        f"<tr><td>{_e(e.id)}</td><td>{_e(e.zone)}</td><td><code>{_e(e.url)}</code></td>"
        f"<td>{_e(e.health)}</td></tr>"
        for e in view.edges
    )
    registry = f"<p>Registry: {_e(view.registry)}</p>" if view.registry else ""
    return (
        f"{registry}<table><tr><th>edge</th><th>zone</th><th>url</th><th>health</th></tr>"
        f"{rows}</table>"
    )


def _swarm(swarm: SwarmLine | None) -> str:
    if swarm is None:
        return "<p>No swarm: this edge has no tracker.</p>"
    figures = (
        ("torrents", swarm.torrents),
        ("peers", swarm.peers),
        ("downloading", swarm.downloading),
        ("seeding", swarm.seeding),
        ("seeds", swarm.seeds),
    )
    rows = "".join(
        f'<tr><td>{name}</td><td class="n" id="swarm-{name}">{value}</td></tr>'
        for name, value in figures
    )
    return f"<table>{rows}</table>"


def _generations(generations: Iterable[tuple[str, datetime | None]]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(suite)}</code></td>"
        f"<td>{_e(date.strftime('%Y-%m-%d %H:%M:%S UTC') if date else 'no Date')}</td></tr>"
        for suite, date in generations
    )
    if not rows:
        return "<p>No verified repository generation yet.</p>"
    return f'<table id="generations"><tr><th>suite</th><th>Date</th></tr>{rows}</table>'


def _collections(collections: Sequence[CollectionLine]) -> str:
    rows = "".join(
        f'<tr><td>{_e(c.name)}</td><td class="n">{c.version}</td>'
        f'<td class="n">{c.files_present} / {c.files_wanted}</td>'
        f'<td class="n">{_e(human_bytes(c.bytes_present))} / {_e(human_bytes(c.bytes_wanted))}'
        f"</td><td>{_e('; '.join(c.errors))}</td></tr>"
        for c in collections
    )
    return (
        '<table><tr><th>collection</th><th class="n">version</th><th class="n">files</th>'
        f'<th class="n">bytes</th><th>errors</th></tr>{rows}</table>'
    )


def _apt_lines(view: StatusView) -> str:
    url = view.public_url
    host = view.upstream_hosts[0] if view.upstream_hosts else "MIRROR"
    return (
        "<p>As a proxy (apt.conf):</p>"
        f'<pre id="apt-proxy">Acquire::http::Proxy "{_e(url)}/";</pre>'
        "<p>Or with the path prefix (sources.list):</p>"
        f'<pre id="apt-prefix">deb {_e(url)}/{_e(host)}/debian stable main</pre>'
        "<p>Or through the mesh method (picks the nearest healthy edge, falls back to the "
        "mirror):</p>"
        f'<pre id="apt-mesh">Acquire::mesh::Edges "{_e(url)}";\n'
        f'Acquire::mesh::Zone "{_e(view.zone)}";\n'
        f"deb mesh+http://{_e(host)}/debian stable main</pre>"
        f'<p class="muted">Upstreams: {_e(", ".join(view.upstream_hosts) or "none")}</p>'
    )


def render(view: StatusView, now: float) -> str:
    """The page (pure)."""
    key = "".join(
        f'<span style="background:{_COLOURS[k]}"></span>{_e(k.value)}' for k in SourceKind
    )
    sections = [
        ("What this edge saved the mirror", _saved(view) + _served_table(view)),
        (
            "Bytes served by source",
            f'<p class="key">{key}</p>'
            + _chart(view.served_hour_series, "last hour, per minute")
            + _chart(view.served_day_series, "last day, per 30 minutes"),
        ),
        ("Cache", _cache(view)),
        ("Fallbacks to the upstream, last hour", _fallbacks(view, now)),
        ("Edges of the zone", _edges(view)),
        ("Swarm", _swarm(view.swarm)),
        ("Repository generations served", _generations(view.generations)),
    ]
    if view.collections:
        sections.append(("Collections", _collections(view.collections)))
    sections.append(("Using this edge", _apt_lines(view)))
    body = "".join(
        f'<section id="s{i}"><h2>{_e(title)}</h2>{content}</section>'
        for i, (title, content) in enumerate(sections)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>aptmesh edge {_e(view.edge_id)}</title><style>{_CSS}</style></head><body>"
        f'<h1>aptmesh edge <span id="edge-id">{_e(view.edge_id)}</span></h1>'
        f'<p class="muted">zone {_e(view.zone or "(none)")} · {_e(_time(now))} · refreshes every '
        f'{REFRESH_SECONDS} s · <a href="/metrics">metrics</a></p>'
        f'<div class="grid">{body}</div></body></html>'
    )

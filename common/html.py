"""What every Shipyard HTML page shares: one small stylesheet, numbers written for people,
and inline SVG line charts.

Pages stay single files (the stylesheet is an inline ``<style>``, charts are inline ``<svg>``),
carry no scripts, and escape every value they show. Formatting rules, by example:
``1.97 M`` (counts), ``892 MB`` (bytes, SI units), ``3.2 s`` / ``4 min 05 s`` (durations),
``0.0123`` / ``12,345`` (plain numbers): never ``8.92404e+08``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Status words the stylesheet colours (class "status-<word>").
STATUS_CLASSES = ("succeeded", "failed", "missing", "running")

STYLESHEET = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg-alt:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;
--warn:#9a6700;--accent:#0969da}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0 auto;padding:16px 24px 40px;max-width:1100px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:24px 0 8px}
h3{font-size:15px;margin:18px 0 6px}
p.subtitle{color:var(--muted);margin:0 0 16px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg-alt);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#ffebe9}tr.warn td{background:#fff8c5}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
pre{background:var(--bg-alt);border:1px solid var(--line);padding:8px;white-space:pre-wrap;
font-size:12px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;background:var(--muted)}
.status-succeeded{background:var(--ok)}.status-failed{background:var(--bad)}
.status-missing{background:#8c959f}.status-running{background:var(--warn)}
.verdict-pass{color:var(--ok)}.verdict-fail{color:var(--bad)}
section.stage{border:1px solid var(--line);border-radius:6px;padding:4px 14px 8px;margin:14px 0}
section.stage h2{display:flex;gap:10px;align-items:center}
.muted{color:var(--muted)}
svg.chart{display:block;margin:6px 0 12px;max-width:100%}
svg.chart text{font:11px system-ui,sans-serif;fill:var(--muted)}
img{max-width:100%}
"""


def style_tag() -> str:
    return f"<style>{STYLESHEET}</style>"


def page(title: str, body_html: str, subtitle: str | None = None) -> str:
    """A complete single-file HTML page: the shared stylesheet inline, no scripts."""
    sub = f"<p class='subtitle'>{html.escape(subtitle)}</p>" if subtitle else ""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(title)}</title>{style_tag()}</head><body>"
            f"<h1>{html.escape(title)}</h1>{sub}{body_html}</body></html>\n")


def status_badge(status: str) -> str:
    css = status if status in STATUS_CLASSES else "missing"
    return f"<span class='status status-{css}'>{html.escape(status)}</span>"


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]],
          row_classes: Sequence[str] | None = None) -> str:
    """An escaped HTML table; numbers are formatted with `format_number` and right-aligned."""
    head = ("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"
            if headers else "")
    body = []
    for i, row in enumerate(rows):
        css = f" class='{html.escape(row_classes[i])}'" if row_classes and row_classes[i] else ""
        cells = "".join(_cell(c) for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def key_value_table(rows: Iterable[tuple[str, Any]]) -> str:
    """Two columns, label and value; a label row header for each line."""
    return "<table>" + "".join(
        f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows) + "</table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(format_value(value))}</td>"
    return f"<td class='num'>{html.escape(format_number(value))}</td>"


# ---- numbers for people ---------------------------------------------------------------------

# IEC binary units, as `ls -h`, `df -h` and every byte bound in docs/ and the configs use
_IEC_PREFIXES = ((1 << 40, "Ti"), (1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki"))
_COUNT_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"))


def format_value(value: Any) -> str:
    """Any value as text: numbers via `format_number`, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format_number(value)
    return str(value)


def format_number(value: float | int | None, significant: int = 3) -> str:
    """``12,345`` for integers, ``0.0123``/``3.21``/``12.3`` (three significant digits) and
    ``1,234`` for floats, ``1.97 M`` from a million up; scientific notation only below 0.0001
    (``1.2e-05``). None -> ``–``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a" if math.isnan(value) else ("∞" if value > 0 else "-∞")
    if abs(value) >= 1e6:
        return format_count(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{significant}g}")
    if abs(rounded) >= 1000:  # whole units are precise enough from a thousand up
        return f"{value:,.0f}"
    if abs(rounded) < 1e-4:
        return f"{value:.{max(significant - 1, 1)}e}"
    text = f"{rounded:.{significant}g}"
    return text if "e" not in text else f"{rounded:f}".rstrip("0").rstrip(".")


def format_count(value: float, unit: str = "") -> str:
    """``1.97 M parameters``, ``12,345 rows``, ``3.1 B tokens``."""
    suffix = f" {unit}" if unit else ""
    if not math.isfinite(value):
        return format_number(value) + suffix
    for scale, letter in _COUNT_SUFFIXES:
        if abs(value) >= scale * 0.9995:
            return f"{_three_digits(value / scale)} {letter}{suffix}"
    if float(value).is_integer():
        return f"{int(value):,}{suffix}"
    return f"{format_number(value)}{suffix}"


def format_bytes(num_bytes: float) -> str:
    """IEC units, three significant digits: ``851 MiB``, ``1.5 KiB``, ``512 B``; the one
    byte format of reports and the CLI."""
    if not math.isfinite(num_bytes):
        return format_number(num_bytes) + " B"
    for scale, prefix in _IEC_PREFIXES:
        if abs(num_bytes) >= scale * 0.9995:
            return f"{_three_digits(num_bytes / scale)} {prefix}B"
    return f"{round(num_bytes)} B"


def format_duration(seconds: float) -> str:
    """``350 ms``, ``3.2 s``, ``42 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if not math.isfinite(seconds):
        return format_number(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 0.9995:
        return f"{max(round(seconds * 1000), 1)} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{round(seconds)} s"
    total = round(seconds)
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    total_minutes = round(seconds / 60)
    return f"{total_minutes // 60} h {total_minutes % 60:02d} min"


def format_percent(fraction: float | None, significant: int = 3) -> str:
    """A fraction as a percentage: 0.125 -> ``12.5%``."""
    if fraction is None:
        return "–"
    return f"{format_number(fraction * 100, significant)}%"


def short_digest(digest: str | None, length: int = 12) -> str:
    """``sha256:3f1c9a0b2d4e…`` (the full digest belongs in a title or a table cell)."""
    if not digest:
        return "–"
    hexpart = digest.removeprefix("sha256:")
    return f"sha256:{hexpart[:length]}…" if len(hexpart) > length else f"sha256:{hexpart}"


def _three_digits(value: float) -> str:
    """Three significant digits without exponent, for a value in [1, 1000)."""
    text = f"{value:.3g}"
    if "e" in text:  # 999.7 rounds to 1e+03
        return f"{value:.0f}"
    return text


# ---- inline SVG charts ----------------------------------------------------------------------

_PALETTE = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df")


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float]]

    def finite_points(self) -> list[tuple[float, float]]:
        return [(x, y) for x, y in self.points if math.isfinite(x) and math.isfinite(y)]


@dataclass(frozen=True)
class LineChart:
    """A small line (or step) chart; `to_svg` draws nothing when there is nothing to draw."""

    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    step: bool = False  # draw as a step function (e.g. a traffic weight)

    def is_empty(self) -> bool:
        return not any(s.finite_points() for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "x_label": self.x_label, "y_label": self.y_label,
                "step": self.step,
                "series": [{"name": s.name, "points": [list(p) for p in s.points]}
                           for s in self.series]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LineChart:
        return cls(title=str(data.get("title", "")), x_label=str(data.get("x_label", "")),
                   y_label=str(data.get("y_label", "")), step=bool(data.get("step", False)),
                   series=[Series(str(s["name"]), [(float(x), float(y)) for x, y in s["points"]])
                           for s in data.get("series", [])])

    def to_svg(self, width: int = 560, height: int = 200) -> str:
        """Inline SVG, or "" for a chart without a single finite point."""
        if self.is_empty():
            return ""
        left, right, top, bottom = 56, 12, 22, 34
        points = [p for s in self.series for p in s.finite_points()]
        x_min, x_max = _padded_range([x for x, _ in points])
        y_min, y_max = _padded_range([y for _, y in points])

        def sx(x: float) -> float:
            return left + (x - x_min) / (x_max - x_min) * (width - left - right)

        def sy(y: float) -> float:
            return height - bottom - (y - y_min) / (y_max - y_min) * (height - top - bottom)

        parts = [f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' "
                 f"height='{height}' viewBox='0 0 {width} {height}' role='img' "
                 f"aria-label='{html.escape(self.title, quote=True)}'>",
                 f"<title>{html.escape(self.title)}</title>",
                 f"<text x='{left}' y='14'>{html.escape(self.title)}</text>",
                 f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' "
                 f"y2='{height - bottom}' stroke='#d1d9e0'/>",
                 f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' "
                 "stroke='#d1d9e0'/>"]
        for y in (y_min, (y_min + y_max) / 2, y_max):
            parts.append(f"<text x='{left - 4}' y='{sy(y) + 4:.1f}' text-anchor='end'>"
                         f"{html.escape(format_number(y))}</text>")
        for x in (x_min, x_max):
            parts.append(f"<text x='{sx(x):.1f}' y='{height - bottom + 14}' "
                         f"text-anchor='middle'>{html.escape(format_number(x))}</text>")
        parts.append(f"<text x='{(left + width - right) / 2:.0f}' y='{height - 4}' "
                     f"text-anchor='middle'>{html.escape(self.x_label)}</text>")
        parts.append(f"<text x='12' y='{(top + height - bottom) / 2:.0f}' text-anchor='middle' "
                     f"transform='rotate(-90 12 {(top + height - bottom) / 2:.0f})'>"
                     f"{html.escape(self.y_label)}</text>")
        legend_x = width - right
        for i, series in enumerate(self.series):
            pts = series.finite_points()
            if not pts:
                continue
            color = _PALETTE[i % len(_PALETTE)]
            coords = _step_coords(pts) if self.step else pts
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in coords)
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.6' "
                         f"points='{path}'/>")
            if len(pts) == 1 or len(pts) <= 12:
                parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='2.2' fill='{color}'/>"
                          for x, y in pts]
            parts.append(f"<text x='{legend_x}' y='{top + 12 * (i + 1)}' text-anchor='end' "
                         f"style='fill:{color}'>{html.escape(series.name)}</text>")
        parts.append("</svg>")
        return "".join(parts)


def _padded_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat line or a single point: give it some room
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high


def _step_coords(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(points):
        if i:
            out.append((x, points[i - 1][1]))
        out.append((x, y))
    return out


# ---- a stage's key numbers, for the run overview ------------------------------------------

@dataclass(frozen=True)
class StageFacts:
    """What a stage says about its outcome on the run overview (`tasks/overview.py`): a
    headline, (label, text) pairs already formatted for people, an optional chart and an
    optional table (headers, rows). Built by each stage's report module."""

    headline: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    chart: LineChart | None = None
    table: tuple[list[str], list[list[str]]] | None = None

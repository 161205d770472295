"""A small SVG writer for the benchmarks' plots, in pure Python (no matplotlib: the project's
environment has none and gets none).

Two charts: `stacked_bars` (horizontal bars made of named segments, e.g. the stages of one
promotion, with an optional marker per bar) and `grouped_bars` (vertical bars, one group per
label and one bar per series, e.g. idle runs by size, many stacks by kind). Each returns the
SVG text; `write` saves it. Text is escaped; the output parses with xml.etree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

# tab20-like colours, in the order matplotlib's tab20 has them (the old plots' colours)
COLORS = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
          "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
          "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def nice_step(span: float, ticks: int = 6) -> float:
    """A step of 1, 2 or 5 x 10^k that cuts `span` into about `ticks` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


class _Svg:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, title: str = "") -> None:
        tip = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(0.0, w):.1f}' "
                          f"height='{max(0.0, h):.1f}' fill='{fill}' stroke='white' "
                          f"stroke-width='0.5'>{tip}</rect>")

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000",
             width: float = 1.0, opacity: float = 1.0) -> None:
        self.parts.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                          f"stroke='{stroke}' stroke-width='{width}' "
                          f"stroke-opacity='{opacity}'/>")

    def text(self, x: float, y: float, text: str, size: float = 11, anchor: str = "start",
             weight: str = "normal", rotate: float | None = None) -> None:
        turn = f" transform='rotate({rotate} {x:.1f} {y:.1f})'" if rotate is not None else ""
        self.parts.append(f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' "
                          f"text-anchor='{anchor}' font-weight='{weight}' "
                          f"dominant-baseline='middle'{turn}>{escape(text)}</text>")

    def render(self, title: str) -> str:
        head = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' "
                f"height='{self.height}' viewBox='0 0 {self.width} {self.height}' {FONT}>"
                f"<title>{escape(title)}</title>"
                f"<rect width='100%' height='100%' fill='white'/>")
        return "\n".join([head, *self.parts, "</svg>"]) + "\n"


def _legend(svg: _Svg, names: Sequence[str], x0: float, y0: float, width: float) -> float:
    """Colour boxes and names in rows from (x0, y0); the y below the last row."""
    x, y = x0, y0
    for i, name in enumerate(names):
        w = 18 + 6.2 * len(name) + 14
        if x + w > x0 + width and x > x0:
            x, y = x0, y + 18
        svg.rect(x, y - 5, 11, 11, color(i))
        svg.text(x + 15, y + 1, name, size=10)
        x += w
    return y + 18


def stacked_bars(rows: Sequence[tuple[str, Sequence[tuple[str, float]], float | None]],
                 *, title: str, xlabel: str, segments: Sequence[str] = (),
                 marker_note: str = "") -> str:
    """Horizontal bars, top to bottom in the order of `rows`: (label, [(segment, seconds)],
    marker or None). A segment's colour follows its place in `segments` (else first seen), so
    the same stage has the same colour in every bar; a marker is a black tick at its value."""
    order = list(segments)
    for _, segs, _ in rows:
        order += [name for name, _ in segs if name not in order]
    total = max([sum(max(0.0, v or 0.0) for _, v in segs) for _, segs, _ in rows]
                + [m or 0.0 for _, _, m in rows] + [1e-9])
    step = nice_step(total)
    top = step * math.ceil(total / step)
    left, right, bar_h, gap = 150, 30, 30, 16
    width = 860
    plot_w = width - left - right
    plot_top = 46
    plot_h = len(rows) * (bar_h + gap) + gap
    legend_y = plot_top + plot_h + 52
    legend_rows = 1 + int(sum(32 + 6.2 * len(n) for n in order) // plot_w)
    height = int(legend_y + 18 * legend_rows + 24 + (16 if marker_note else 0))
    svg = _Svg(width, height)
    svg.text(width / 2, 20, title, size=13, anchor="middle", weight="bold")

    def xs(v: float) -> float:
        return left + plot_w * v / top

    k = 0
    while k * step <= top + 1e-9:
        x = xs(k * step)
        svg.line(x, plot_top, x, plot_top + plot_h, "#888", 0.5, 0.4)
        svg.text(x, plot_top + plot_h + 12, _fmt(k * step), size=10, anchor="middle")
        k += 1
    svg.line(left, plot_top + plot_h, left + plot_w, plot_top + plot_h, "#000", 1)
    svg.line(left, plot_top, left, plot_top + plot_h, "#000", 1)
    svg.text(left + plot_w / 2, plot_top + plot_h + 32, xlabel, size=11, anchor="middle")
    for r, (label, segs, marker) in enumerate(rows):
        y = plot_top + gap + r * (bar_h + gap)
        for i, line in enumerate(label.split("\n")):
            n = len(label.split("\n"))
            svg.text(left - 8, y + bar_h / 2 + (i - (n - 1) / 2) * 13, line, size=11,
                     anchor="end")
        at = 0.0
        for name, value in segs:
            value = max(0.0, value or 0.0)
            if not value:
                continue
            svg.rect(xs(at), y, xs(at + value) - xs(at), bar_h, color(order.index(name)),
                     f"{label.replace(chr(10), ' ')}: {name} {value:.2f} s")
            if xs(at + value) - xs(at) > 6.5 * len(name) + 6:
                svg.text((xs(at) + xs(at + value)) / 2, y + bar_h / 2, name, size=9,
                         anchor="middle")
            at += value
        if marker is not None:
            svg.line(xs(marker), y - 5, xs(marker), y + bar_h + 5, "#000", 2.5)
    end = _legend(svg, order, left, legend_y, plot_w)
    if marker_note:
        svg.text(left, end + 2, marker_note, size=10)
    return svg.render(title)


def grouped_bars(groups: Sequence[str], series: Sequence[str],
                 values: Sequence[Sequence[float | None]], *, title: str, ylabel: str,
                 notes: Sequence[str] = ()) -> str:
    """Vertical bars: one group per `groups` label, in each one bar per `series` name
    (values[group][series], None: no bar), the value written on top of each bar. `notes`: a
    line under each group's label (a ratio, a count), or none."""
    vmax = max([v for row in values for v in row if v is not None] + [1e-9])
    step = nice_step(vmax)
    top = step * math.ceil(vmax * 1.08 / step)
    left, right, plot_top = 70, 20, 46
    longest = max([len(t) for t in (*groups, *notes)] + [0])
    group_w = max(90, 26 * len(series) + 30, 5.6 * longest + 16)
    width = max(560, left + right + group_w * len(groups), 7.4 * len(title) + 40)
    plot_w = width - left - right
    group_w = plot_w / max(1, len(groups))
    plot_h = 260
    base = plot_top + plot_h
    legend_y = base + (58 if notes else 42)
    height = int(legend_y + 18 * (1 + int(sum(32 + 6.2 * len(s) for s in series) // plot_w))
                 + 12)
    svg = _Svg(int(width), height)
    svg.text(width / 2, 20, title, size=13, anchor="middle", weight="bold")

    def ys(v: float) -> float:
        return base - plot_h * v / top

    k = 0
    while k * step <= top + 1e-9:
        y = ys(k * step)
        svg.line(left, y, left + plot_w, y, "#888", 0.5, 0.4)
        svg.text(left - 6, y, _fmt(k * step), size=10, anchor="end")
        k += 1
    svg.line(left, base, left + plot_w, base, "#000", 1)
    svg.line(left, plot_top, left, base, "#000", 1)
    svg.text(18, plot_top + plot_h / 2, ylabel, size=11, anchor="middle", rotate=-90)
    bar_w = min(40.0, (group_w - 20) / max(1, len(series)))
    for g, label in enumerate(groups):
        x0 = left + g * group_w + (group_w - bar_w * len(series)) / 2
        for s, name in enumerate(series):
            v = values[g][s] if s < len(values[g]) else None
            if v is None:
                continue
            x = x0 + s * bar_w
            svg.rect(x, ys(v), bar_w, base - ys(v), color(2 * s), f"{label}: {name} {v:g}")
            svg.text(x + bar_w / 2, ys(v) - 7, _fmt(v), size=9, anchor="middle")
        svg.text(left + (g + 0.5) * group_w, base + 14, label, size=10, anchor="middle")
        if g < len(notes) and notes[g]:
            svg.text(left + (g + 0.5) * group_w, base + 30, notes[g], size=9, anchor="middle")
    x = left
    for s, name in enumerate(series):  # legend: the series' colours
        svg.rect(x, legend_y - 5, 11, 11, color(2 * s))
        svg.text(x + 15, legend_y + 1, name, size=10)
        x += 32 + 6.2 * len(name)
    return svg.render(title)


def write(path: Path, text: str) -> None:
    path.write_text(text)



# -- the benchmarks' figures, from their --json ------------------------------------------------

DEPLOY_SHORT = {"floor": "floor", "vigo": "vigo apply\n(Traefik's API)",
                "vigo-base": "baseline tree\n(Traefik's API)",
                "vigo-fixed": "vigo apply\n(fixed waits)", "compose": "compose up\n-d --wait"}
COMPOSE_WAIT = "docker compose up -d --wait"


def _loads(values: Sequence[float]) -> str:
    return f", load {min(values):.1f}-{max(values):.1f}" if values else ""


def deploy_figure(data: dict) -> str:
    """benchmarks/deploy: each kind's median stages, stacked, and its median first answer of
    the new revision (the marker)."""
    summary = data["summary"]
    kinds = [k for k in DEPLOY_SHORT if k in summary]
    rows, order = [], []
    for kind in sorted(kinds, key=lambda k: -len(summary[k].get("stages") or {})):
        order += [name for name in summary[kind].get("stages") or {} if name not in order]
    for kind in kinds:  # a stage has one colour: its place in the longest list (vigo's)
        s = summary[kind]
        stages = list((s.get("stages") or {COMPOSE_WAIT: s.get("total") or 0.0}).items())
        rows.append((DEPLOY_SHORT[kind], stages, s.get("serving")))
    runs = summary[kinds[0]].get("runs", 0) if kinds else 0
    return stacked_bars(
        rows, segments=order,
        title=f"One routed stack promoted, stage by stage ({data.get('machine', '')}"
              f"{_loads(data.get('loads') or [])}, medians of {runs} round(s))",
        xlabel="seconds after the push, median per stage",
        marker_note="| the median first answer of the new revision through Traefik")


def idle_figure(data: dict) -> str:
    """benchmarks/idle: an idle run's median wall and CPU time per phase and size; the loop's
    time and ratio under the sizes that ran it (its bars would dwarf the idle ones)."""
    groups, values, notes = [], [], []
    for phase, rows in (data.get("phases") or {}).items():
        for n, r in sorted(rows.items(), key=lambda kv: int(kv[0])):
            groups.append(f"{phase}, {n} stack{'s' if int(n) != 1 else ''}")
            values.append([r.get("idle_median_s"), r.get("idle_cpu_median_s")])
            notes.append(f"loop {r['loop_median_s']:.2f} s = {r['ratio']:.1f}x" if "ratio" in r
                         else "")
    machine = data.get("machine") or {}
    cpus = f"{machine.get('cpus')} cores" if isinstance(machine, dict) else str(machine)
    return grouped_bars(
        groups, ["idle run, wall (s)", "idle run, CPU (s)"], values,
        title=f"Idle vigo apply, medians ({cpus}"
              f"{_loads(data.get('load_average_rounds') or [])})",
        ylabel="seconds", notes=notes)


def many_figure(data: dict) -> str:
    """benchmarks/many: the median wall time of each kind, with its ratio to the loop and the
    requests it lost under each bar."""
    kinds = data["kinds"]
    groups = [k["name"] for k in kinds]
    values = [[k["wall_s"]] for k in kinds]
    loop = next((k["wall_s"] for k in kinds if k.get("loop")), None)
    notes = [(f"{k['wall_s'] / loop:.2f}x the loop, " if loop else "")
             + f"{k['failed']:,} of {k['requests']:,} failed" for k in kinds]
    return grouped_bars(
        groups, ["wall time (s)"], values,
        title=f"{data['stacks']} routed stacks promoted by one commit ({data.get('cpus')} cores"
              f"{_loads(data.get('loads') or [])}, {data.get('rounds', 1)} round(s))",
        ylabel="seconds", notes=notes)


FIGURES = {"deploy": deploy_figure, "idle": idle_figure, "many": many_figure}


def draw(kind: str, data: dict, path: Path) -> None:
    """Write benchmark `kind`'s figure of `data` (its --json) to `path`."""
    write(path, FIGURES[kind](data))

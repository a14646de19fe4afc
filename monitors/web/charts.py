"""The dashboard's plotly figures, drawn in the browser by static/jobwatch/jobwatch.js with the
plotly.js served from static/ (no CDN). Every figure is a plain dict that the template embeds
with json_script, so nothing of a job's text can become script.

Layouts are built with plotly's graph objects (validated against plotly's schema) once per kind
of chart and cached; traces are plain dicts. Validating every trace's points on each request cost
35 ms a chart — most of a page's time budget — for data whose shape never changes."""

import copy
import datetime
import functools

import plotly.graph_objects as go
from django.utils import timezone

COLOURS = ["#3b6fd8", "#b3261e", "#1b7f3b", "#c07a00", "#7a3bd8", "#00838f", "#5b6475", "#d81b60"]
HEIGHT = 220


def line_chart(series, title="", y_title="", stacked=False, height=HEIGHT, window=None):
    """series: [(name, [x…], [y…])] → figure dict. x are datetimes (shown in the site's time zone).
    `window` (monitors/web/windows.Window): the x axis spans exactly the page's window, whatever
    the data covers, so that the charts of one page line up and a series that began ten minutes
    ago is drawn as ten minutes of an hour, not stretched across the chart."""
    data = []
    to_wall_time = wall_time_converter()
    for index, (name, xs, ys) in enumerate(series):
        ys = list(ys)
        trace = {
            "type": "scatter", "name": as_text(name), "x": [to_wall_time(x) for x in xs], "y": ys,
            # A line needs two points: a series that has one so far shows it as a dot.
            "mode": "lines" if sum(y is not None for y in ys) > 2 else "lines+markers",
            "line": {"width": 1.6, "color": COLOURS[index % len(COLOURS)]},
        }
        if stacked:
            trace["stackgroup"] = "one"
        data.append(trace)
    layout = line_layout(title, y_title, height, len(series) > 1)
    if window is not None:
        layout["xaxis"]["range"] = [wall_time(window.since), wall_time(window.until)]
    return {"data": data, "layout": layout}


def line_layout(title, y_title, height, legend):
    return copy.deepcopy(_line_layout(title, y_title, height, legend))


@functools.lru_cache(maxsize=256)
def _line_layout(title, y_title, height, legend):
    return plain(go.Layout(
        title=heading(title), height=height, margin={"l": 44, "r": 8, "t": 28 if title else 8, "b": 28},
        yaxis={"title": {"text": y_title}, "rangemode": "tozero", "fixedrange": True},
        xaxis={"type": "date"},
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
        showlegend=legend, hovermode="x unified",
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    ))


def heading(title):
    return {"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"} if title else None


def plain(layout):
    """A layout as JSON-ready dicts, without plotly's theme (a few kB per chart; plotly.js's
    defaults look the same)."""
    layout = layout.to_plotly_json()
    layout.pop("template", None)
    return layout


def as_text(name):
    """plotly.js reads a trace name as a little HTML (links, bold): a queue or task name is text."""
    return str(name).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def wall_time(moment):
    """A time as plotly.js should draw it (see wall_time_converter)."""
    return wall_time_converter()(moment)


def wall_time_converter():
    """wall_time for many points, the site's zone looked up once (a chart has hundreds of points,
    and each look-up goes through Django's per-request locals).

    plotly.js reads a number on a date axis as milliseconds since 1970 and draws it as UTC, and it
    draws a time string as written, ignoring any offset; either way it shows what it is given.
    It is given the site's wall time as such milliseconds: the moment's own plus its offset in the
    site's zone at that moment (so a chart across a daylight-saving change shows the clock as it
    was). A number rather than a string because a chart's points are most of a page's JSON: as
    text each cost ~3.5 µs more to make and encode (the Overview's 400-point queue-age chart,
    built and encoded: 3.9 ms as text, 2.5 ms as numbers)."""
    zone = timezone.get_current_timezone()

    def convert(moment):
        if isinstance(moment, datetime.datetime) and moment.utcoffset() is not None:
            return round((moment.timestamp() + moment.astimezone(zone).utcoffset().total_seconds()) * 1000)
        return moment

    return convert


def bar_chart(categories, series, title="", y_title="", height=HEIGHT):
    """Grouped bars: categories are the x labels (text), series [(name, [y per category])]."""
    data = [{"type": "bar", "name": as_text(name), "x": [as_text(label) for label in categories], "y": list(ys),
             "marker": {"color": COLOURS[index % len(COLOURS)]}}
            for index, (name, ys) in enumerate(series)]
    layout = copy.deepcopy(_bar_layout(title, y_title, height, len(series) > 1))
    return {"data": data, "layout": layout}


@functools.lru_cache(maxsize=64)
def _bar_layout(title, y_title, height, legend):
    return plain(go.Layout(
        title=heading(title), height=height, margin={"l": 44, "r": 8, "t": 28 if title else 8, "b": 48},
        yaxis={"title": {"text": y_title}, "rangemode": "tozero", "fixedrange": True},
        xaxis={"type": "category", "tickangle": -40, "fixedrange": True},
        legend={"orientation": "h", "y": 1.12, "font": {"size": 11}}, barmode="group",
        showlegend=legend, hovermode="x unified",
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    ))

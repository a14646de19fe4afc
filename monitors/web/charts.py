"""The dashboard's plotly figures, built here and drawn in the browser by static/jobwatch/
jobwatch.js with the plotly.js served from static/ (no CDN). Every figure is a plain dict that
the template embeds with json_script, so nothing of a job's text can become script."""

import datetime

import plotly.graph_objects as go
from django.utils import timezone

COLOURS = ["#3b6fd8", "#b3261e", "#1b7f3b", "#c07a00", "#7a3bd8", "#00838f", "#5b6475", "#d81b60"]
HEIGHT = 220


def line_chart(series, title="", y_title="", stacked=False, height=HEIGHT):
    """series: [(name, [x…], [y…])] → figure dict. x are datetimes (shown in the browser's zone)."""
    figure = go.Figure()
    for index, (name, xs, ys) in enumerate(series):
        figure.add_trace(go.Scatter(
            x=[wall_time(x) for x in xs], y=list(ys), name=name,
            # A line needs two points: a series that has one so far shows it as a dot.
            mode="lines" if sum(y is not None for y in ys) > 2 else "lines+markers",
            line={"width": 1.6, "color": COLOURS[index % len(COLOURS)]},
            stackgroup="one" if stacked else None,
        ))
    figure.update_layout(
        title={"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"} if title else None,
        height=height, margin={"l": 44, "r": 8, "t": 28 if title else 8, "b": 28},
        yaxis={"title": {"text": y_title}, "rangemode": "tozero", "fixedrange": True},
        xaxis={"type": "date"},
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
        showlegend=len(series) > 1, hovermode="x unified",
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    return plain(figure)


def bar_chart(labels, values, title="", height=HEIGHT, horizontal=True):
    figure = go.Figure(go.Bar(
        x=list(values) if horizontal else list(labels), y=list(labels) if horizontal else list(values),
        orientation="h" if horizontal else "v", marker={"color": COLOURS[0]},
    ))
    figure.update_layout(
        title={"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"} if title else None,
        height=height, margin={"l": 8, "r": 8, "t": 28 if title else 8, "b": 28},
        yaxis={"automargin": True, "autorange": "reversed" if horizontal else True, "fixedrange": True},
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    return plain(figure)


def plain(figure):
    """The figure as JSON-ready dicts and lists (no numpy, no plotly objects), without plotly's
    theme (a few kB per chart; plotly.js's defaults look the same)."""
    figure = figure.to_plotly_json()
    figure["layout"].pop("template", None)
    return figure


def wall_time(moment):
    """plotly.js draws a time as written, ignoring its offset: send the site's local time."""
    if isinstance(moment, datetime.datetime) and timezone.is_aware(moment):
        return timezone.localtime(moment).replace(tzinfo=None)
    return moment

from functools import lru_cache
from urllib.parse import quote

from django import template
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.http import RFC3986_SUBDELIMS
from django.utils import timezone
from django.utils.html import conditional_escape, format_html, format_html_join, json_script
from django.utils.safestring import mark_safe

from monitors import timing
from monitors.actions import purge
from monitors.heartbeats import stale_tasks
from monitors.models import JobState
from monitors.web import partials

register = template.Library()

if not partials.BUILT_IN:  # Django 5.2: {% partialdef %} for the templates that load this library
    register.tag("partialdef", partials.partialdef)

# The pages in the header, in the order an operator paged at night looks at them.
NAV_PAGES = [
    ("monitors:overview", "Overview"), ("monitors:queues", "Queues"), ("monitors:jobs", "Jobs"),
    ("monitors:failures", "Failures"), ("monitors:tasks", "Tasks"), ("monitors:periodic", "Periodic"), ("monitors:fanout", "Fan-out"), ("monitors:orphans", "Orphans"),
    ("monitors:circuits", "Circuits"), ("monitors:workers", "Workers"), ("monitors:findings", "Findings"),
    ("monitors:alerts", "Alerts"), ("monitors:archive", "Archive"), ("monitors:actions", "Audit log"),
]


@register.simple_tag(takes_context=True)
def nav(context):
    return NAV_PAGES


@register.inclusion_tag("jobwatch/monitor_banner.html", takes_context=True)
def monitor_banner(context):
    """A stale monitor is a banner on every page, not silence (samples and findings stop). A page
    that read the stale tasks itself (the Overview's "stale") is not asked again."""
    if "stale" in context:
        return {"stale": context["stale"]}
    try:
        return {"stale": stale_tasks()}
    except Exception:  # the banner must never take a page down with it
        return {"stale": []}


@register.filter
def sparkline(values, size="120x24"):
    """An inline SVG line of numbers (None = gap), drawn on the server: no script, any page."""
    width, height = (int(part) for part in size.split("x"))
    points = [value for value in values if value is not None]
    if len(points) < 2:
        return ""
    top = max(points) or 1
    step = width / (len(values) - 1)
    path = " ".join(f"{index * step:.1f},{height - 1 - (value / top) * (height - 2):.1f}"
                    for index, value in enumerate(values) if value is not None)
    return format_html('<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="trend, peak {}">'
                       '<polyline fill="none" stroke="#3b6fd8" stroke-width="1.5" points="{}"/></svg>',
                       width, height, width, height, top, path)


@register.filter
def run_marks(states):
    """A periodic task's last runs as a strip of coloured marks, oldest first — built here in one
    go: a page of 50 entries has 1,500 of them, a tenth of its time in the template loop."""
    return mark_safe("".join(run_mark(state) for state in states))  # each mark escaped by run_mark


@lru_cache(maxsize=64)  # a job's states are a handful of words
def run_mark(state):
    return format_html('<span class="mark state-{}" title="{}">■</span>', state, state)


@register.simple_tag
def chart(figure, name):
    """A plotly chart: an empty box that jobwatch.js draws into, and the figure beside it as JSON
    data (json_script: never executable, whatever a job named its task or queue)."""
    return format_html('<div class="chart" data-chart="{}"></div>{}', name, json_script(figure, name))


_jobs_url = {}


@register.filter
def job_url(task_id):
    """A job's page: what {% url 'monitors:job' task_id %} writes, without matching the URL
    patterns again for each of a list's 50 rows (50 links: 2.5 ms by the tag, 0.6 ms by this) —
    the jobs list's own address, looked up once per script prefix and URLconf, then the id quoted
    as reverse() quotes it, but for "/": a task id is the sender's to choose, and a "/" in it is
    sent as %2F, so that a browser never reads "a/../b" as a path to walk (the server decodes it
    back, and the route takes any id). An id that is just "." or ".." still is, and lands on a
    list page."""
    key = (get_script_prefix(), get_urlconf())
    if key not in _jobs_url:
        _jobs_url[key] = reverse("monitors:jobs")
    return f"{_jobs_url[key]}{quote(str(task_id), safe=RFC3986_SUBDELIMS + '~:@')}/"


@register.simple_tag
def hidden_fields(values):
    """A hidden input for each name and value of `values`: the filter a replay, cancel or discard
    form carries (the jobs list, each of the Failures page's groups), written in one go rather
    than by a template loop."""
    return format_html_join("", '<input type="hidden" name="{}" value="{}">', values.items())


STATE_LABELS = dict(JobState.choices)


@register.filter
def state_label(state):
    """A job's state as the pages say it ("Succeeded"), for rows read as dicts (the jobs list:
    see monitors/web/jobs.py), which have no get_state_display."""
    return STATE_LABELS.get(state, state)


@register.filter
def wbr(text):
    """Escaped text that may break after a dot or an underscore (dotted task and receiver names
    wrap at their parts, not mid-word, and not at all where there is room)."""
    escaped = str(conditional_escape(text if text is not None else ""))
    return mark_safe(escaped.replace(".", ".<wbr>").replace("_", "_<wbr>").replace("@", "@<wbr>"))


@register.filter
def get(mapping, key):
    return (mapping or {}).get(key)


@register.simple_tag(takes_context=True)
def query(context, **changes):
    """The current query string with some parameters changed (None or "" removes one)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.filter
def duration(seconds):
    """12s, 4m, 2.5h: how long, at a glance."""
    if seconds is None or seconds == "":
        return "–"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@register.filter
def took(seconds):
    """3.2 ms, 1.5 s, 2 min: a job's runtime or wait, to three figures (timing.duration)."""
    return timing.duration(seconds)


@register.filter
def change(ratio):
    """A speed now against before (now / before): "3.2× slower", "half the time", "same"."""
    if ratio is None:
        return "–"
    if 0.9 <= ratio <= 1.1:
        return "about the same"
    if ratio > 1:
        return format_html('<span class="warn">{}× slower</span>', f"{ratio:.3g}")
    return f"{1 / ratio:.3g}× faster" if ratio >= 0.001 else "over 1000× faster"


@register.filter
def ago(moment):
    """How long ago, to the second when it matters ("4s ago", "3m ago", "2.5h ago")."""
    if not moment:
        return "–"
    return f"{duration(max((timezone.now() - moment).total_seconds(), 0))} ago"


@register.filter
def message_key(raw):
    """The key the purge form picks an undecodable message by (monitors.actions.purge.message_key)."""
    return purge.message_key(raw) if raw is not None else ""


@register.filter
def split(text):
    return text.split()


@register.filter
def since(moment):
    """When something began, in the site's zone, and for how long: "07:01 UTC · 9 min" (with the
    date before today's). Read after "since" or "opened"; replaces timesince's "0 minutes"."""
    return moment_text(moment, ago=False)


@register.filter
def when(moment):
    """When something happened or will: "07:05 UTC · 5 min ago", "08:00 UTC · in 50 min"."""
    return moment_text(moment, ago=True)


def moment_text(moment, ago):
    if not moment:
        return "–"
    now = timezone.now()
    local = timezone.localtime(moment)
    shown = "%H:%M %Z" if local.date() == timezone.localtime(now).date() else "%Y-%m-%d %H:%M %Z"
    seconds = (now - moment).total_seconds()
    if not ago:
        relative = span(max(seconds, 0))
    elif seconds >= 0:
        relative = f"{span(seconds)} ago"
    else:
        relative = f"in {span(-seconds)}"
    return format_html('<time datetime="{}" title="{}">{}</time> · {}', local.isoformat(timespec="seconds"),
                       local.strftime("%Y-%m-%d %H:%M:%S %Z"), local.strftime(shown), relative)


def span(seconds):
    """40 s, 9 min, 2 h 5 min, 3 d 4 h: a length of time as people say it, to two units at most."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"

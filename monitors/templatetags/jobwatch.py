from django import template

register = template.Library()


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
def message_key(raw):
    """The key the purge form picks an undecodable message by (monitors.purge.message_key)."""
    from monitors.purge import message_key as key

    return key(raw) if raw is not None else ""

"""Alerting: the monitor's own rules (stale), incidents from findings, and notifications.

    run_alerts()   # what the periodic task jobwatch.send_alerts does
"""

from django.utils import timezone

from monitors.alerts import channels, incidents, rules
from monitors.detectors.lifecycle import record_problems


def run_alerts(now=None, in_place_of_beat=""):
    """`in_place_of_beat`: the worker running this because beat is not (alerts/watchdog.py)."""
    now = now or timezone.now()
    record_problems(rules.NAME, rules.monitor_problems(now, in_place_of_beat), now)
    channels.sync_channels_from_settings()
    created = incidents.update_incidents(now)
    delivered = channels.deliver(now)
    return {"notifications_created": len(created), "delivered": delivered}

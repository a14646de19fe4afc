"""Sending notifications: email (Django's mail settings), a JSON webhook, a Slack-compatible
webhook. Channels are sent to in parallel, each on its own: a webhook that hangs until its
timeout delays no email. A failure is recorded and retried with back-off; a channel that fails
CHANNEL_MAX_FAILURES times in a row is turned off (and says why), its pending notices abandoned.
"""

import json
import logging
import secrets
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.core.mail import send_mail
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from monitors.conf import setting
from monitors.models import Notification, NotificationChannel

logger = logging.getLogger("monitors.alerts")

CLAIM_SECONDS = 120
MAX_BACKOFF_SECONDS = 3600
BATCH = 50
PREFIX = {"opened": "", "escalated": "[escalated] ", "repeat": "[still open] ", "resolved": "[resolved] ", "test": "[test] "}


def sync_channels_from_settings():
    """Channels listed in JOBWATCH["ALERT_CHANNELS"] exist in the table, as the settings say."""
    for spec in setting("ALERT_CHANNELS"):
        NotificationChannel.objects.update_or_create(
            name=spec["name"],
            defaults={"kind": spec["kind"], "target": spec["target"], "min_severity": spec.get("min_severity", "warning"),
                      "from_settings": True},
        )


def deliver(now=None):
    """Send what is pending, each channel in its own thread. Returns {channel: (sent, failed)}."""
    now = now or timezone.now()
    waiting = Notification.objects.filter(status=Notification.Status.PENDING).values_list("channel_id", flat=True).distinct()
    channels = list(NotificationChannel.objects.filter(pk__in=list(waiting), enabled=True)
                    .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)))
    if not channels:
        return {}
    if connection.vendor == "sqlite":  # one writer at a time anyway; threads would only wait for the lock
        return {channel.name: deliver_channel(channel.pk, now) for channel in channels}
    with ThreadPoolExecutor(max_workers=min(len(channels), 8), thread_name_prefix="jobwatch-notify") as pool:
        futures = {channel.name: pool.submit(in_thread, deliver_channel, channel.pk, now) for channel in channels}
    return {name: future.result() for name, future in futures.items()}


def in_thread(function, *args):
    try:
        return function(*args)
    finally:
        close_old_connections()
        connection.close()


def deliver_channel(channel_id, now):
    channel = NotificationChannel.objects.get(pk=channel_id)
    claimed = claim(channel, now)
    sent = failed = 0
    for notification in claimed:
        try:
            send(channel, notification.payload, notification.event)
        except Exception as error:
            failed += 1
            record_failure(channel, notification, error, now)
            break  # the channel is failing: the rest wait for its back-off
        sent += 1
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.SENT, sent_at=timezone.now(), attempts=notification.attempts + 1, claimed_until=None)
        NotificationChannel.objects.filter(pk=channel.pk).update(
            consecutive_failures=0, last_success_at=timezone.now(), next_attempt_at=None)
    # What this sender claimed but did not get to is free for the next run.
    Notification.objects.filter(pk__in=[item.pk for item in claimed], status=Notification.Status.PENDING).update(claimed_until=None)
    return sent, failed


def claim(channel, now):
    """This sender's share of the channel's pending notices, oldest first: marked with a lease
    so that another alert task running at the same moment sends the others, not these."""
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    pending = Notification.objects.filter(channel=channel, status=Notification.Status.PENDING).filter(free)
    ids = list(pending.order_by("created_at", "pk").values_list("pk", flat=True)[:BATCH])
    # The lease time doubles as this sender's mark: a random microsecond makes it its own.
    lease = now.replace(microsecond=0) + timedelta(seconds=CLAIM_SECONDS, microseconds=secrets.randbelow(1_000_000))
    Notification.objects.filter(pk__in=ids).filter(free).update(claimed_until=lease)
    return list(Notification.objects.filter(pk__in=ids, claimed_until=lease).order_by("created_at", "pk"))


def record_failure(channel, notification, error, now):
    message = f"{type(error).__name__}: {error}"[:2000]
    failures = channel.consecutive_failures + 1
    backoff = min(MAX_BACKOFF_SECONDS, 10 * 2 ** (failures - 1))
    Notification.objects.filter(pk=notification.pk).update(attempts=notification.attempts + 1, last_error=message, claimed_until=None)
    changes = {"consecutive_failures": failures, "last_error": message, "last_failure_at": now,
               "next_attempt_at": now + timedelta(seconds=backoff)}
    if failures >= setting("CHANNEL_MAX_FAILURES"):
        changes.update(enabled=False, disabled_reason=f"turned off after {failures} failures in a row; last: {message}")
        Notification.objects.filter(channel=channel, status=Notification.Status.PENDING).update(status=Notification.Status.ABANDONED)
        logger.error("Jobwatch turned the notification channel %s off: %s", channel.name, message)
    else:
        logger.warning("Jobwatch could not notify %s (attempt %d, next in %d s): %s", channel.name, failures, backoff, message)
    NotificationChannel.objects.filter(pk=channel.pk).update(**changes)


def send(channel, payload, event):
    timeout = setting("CHANNEL_TIMEOUT")
    subject = f"{PREFIX.get(event, '')}[{payload['severity']}] {payload['title']}"
    if channel.kind == NotificationChannel.Kind.EMAIL:
        recipients = [address.strip() for address in channel.target.split(",") if address.strip()]
        send_mail(subject, email_body(payload), None, recipients, fail_silently=False)
    elif channel.kind == NotificationChannel.Kind.SLACK:
        post_json(channel.target, {"text": f"{subject}\n{payload['explanation']}" + (f"\n{payload['url']}" if payload["url"] else "")}, timeout)
    else:
        post_json(channel.target, payload, timeout)


def post_json(url, body, timeout):
    request = urllib.request.Request(url, data=json.dumps(body, default=str).encode(),
                                     headers={"Content-Type": "application/json", "User-Agent": "Jobwatch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # raises on 4xx/5xx
        response.read(1024)


def email_body(payload):
    lines = [payload["title"], "", payload["explanation"], "", "Evidence:"]
    lines += [f"  {key}: {value}" for key, value in (payload.get("evidence") or {}).items()]
    lines += ["", f"Opened {payload['opened_at']}" + (f", resolved {payload['resolved_at']}" if payload.get("resolved_at") else "")]
    if payload.get("url"):
        lines.append(payload["url"])
    return "\n".join(lines)


def send_test(channel):
    """A test message to one channel, now; raises if it cannot be sent."""
    payload = {"event": "test", "severity": "info", "title": f"Test from Jobwatch to {channel.name}", "kind": "test",
               "subject": channel.name, "explanation": "If you can read this, the channel works.", "evidence": {},
               "opened_at": timezone.now().isoformat(), "resolved_at": None, "url": setting("DASHBOARD_URL"), "incident": None}
    send(channel, payload, "test")

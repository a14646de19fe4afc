"""Sending notifications: email (Django's mail settings), a JSON webhook, a Slack-compatible
webhook. Channels are sent to in parallel, each on its own: a webhook that hangs until its
timeout delays no email.

Each kind of channel is a small class (Channel) registered in CHANNEL_KINDS; everything here
looks a kind up there, so a new kind is one class and one @register.

Failures are of two sorts. A temporary one (a timeout, a refused connection, a 5xx, a 429) may
fix itself: it is recorded and retried with back-off, and a channel that fails
CHANNEL_MAX_FAILURES times in a row is turned off. A permanent one (the URL is gone, the
credentials are refused, the target is malformed: PermanentChannelError) will not fix itself by
retrying: the channel is turned off at once, saying why in words an operator can act on, and
its pending notices are abandoned, instead of hammering a dead endpoint for hours first.
"""

import http.client
import json
import logging
import secrets
import smtplib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.utils import parseaddr
from http import HTTPStatus
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
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
FIX = "fix the target and turn the channel back on"


# -- errors ----------------------------------------------------------------------------------------


class PermanentChannelError(Exception):
    """A failure that retrying will not fix. Its message is the operator's reason, shown as the
    channel's disabled_reason: what happened, what it means, what to do. It never contains the
    target: a webhook's URL is its password, and the reason is shown on the Alerts page and API."""


class UnknownChannelKind(PermanentChannelError, LookupError):
    """A channel whose kind no class is registered for (a typo in JOBWATCH["ALERT_CHANNELS"])."""

    def __init__(self, kind):
        self.kind = kind
        known = ", ".join(sorted(CHANNEL_KINDS)) or "none"
        super().__init__(f"Jobwatch cannot send to a channel of kind {str(kind)[:40]!r}: the kinds it knows are {known}; "
                         "fix the kind and turn the channel back on")


# -- the kinds -------------------------------------------------------------------------------------

CHANNEL_KINDS = {}


def register(cls):
    """Class decorator: make `cls` the sender for channels of kind `cls.kind`."""
    if not getattr(cls, "kind", None):
        raise TypeError(f"{cls.__name__} needs a kind to be registered")
    if cls.kind in CHANNEL_KINDS and CHANNEL_KINDS[cls.kind] is not cls:
        raise ValueError(f"channel kind {cls.kind!r} is already registered to {CHANNEL_KINDS[cls.kind].__name__}")
    CHANNEL_KINDS[cls.kind] = cls
    return cls


def channel_class(kind):
    """The registered class for `kind`; UnknownChannelKind (a permanent error) if there is none."""
    try:
        return CHANNEL_KINDS[kind]
    except (KeyError, TypeError):
        raise UnknownChannelKind(kind) from None


def channel_for(channel):
    """The sender for one NotificationChannel row: its kind's class, on its checked target."""
    return channel_class(channel.kind)(channel.target, timeout=setting("CHANNEL_TIMEOUT"))


class Channel:
    """One kind of channel. Subclasses set `kind`, check a target in `validate_target` and send
    in `send`. `send` raises PermanentChannelError for what retrying will not fix; anything else
    it raises is taken as temporary (retried with back-off)."""

    kind = ""

    def __init__(self, target, timeout=None):
        self.target = self.validate_target(target)
        self.timeout = timeout

    @classmethod
    def validate_target(cls, target):
        """The target in the form `send` uses; PermanentChannelError if it cannot be one."""
        raise NotImplementedError

    def send(self, payload, event=None):
        raise NotImplementedError

    @staticmethod
    def subject(payload, event=None):
        event = event or payload.get("event", "")
        return f"{PREFIX.get(event, '')}[{payload['severity']}] {payload['title']}"


@register
class EmailChannel(Channel):
    """A comma-separated list of addresses, sent through Django's mail settings."""

    kind = NotificationChannel.Kind.EMAIL.value

    @classmethod
    def validate_target(cls, target):
        entries = [entry.strip() for entry in str(target or "").split(",")]
        recipients = [entry for entry in entries if entry]
        if not recipients:
            raise PermanentChannelError(f"the email channel has no address to send to; {FIX}")
        for number, entry in enumerate(recipients, 1):
            try:
                validate_email(parseaddr(entry)[1])  # "On call <oncall@example.com>" is an address too
            except ValidationError:
                raise PermanentChannelError(
                    f"address {number} of {len(recipients)} in the target is not an email address; {FIX}") from None
        return recipients

    def send(self, payload, event=None):
        try:
            send_mail(self.subject(payload, event), email_body(payload), None, self.target, fail_silently=False)
        except smtplib.SMTPAuthenticationError as error:
            raise PermanentChannelError(
                f"the mail server refused Jobwatch's login ({error.smtp_code} authentication failed): "
                "the mail user or password in the settings is wrong; fix the mail settings and turn the channel back on") from error
        except smtplib.SMTPRecipientsRefused as error:
            codes = sorted({code for code, _ in error.recipients.values()})
            # smtplib raises this only when every recipient was refused; a 4xx refusal (mailbox
            # busy, greylisted) is the server asking to try later, so only all-5xx is permanent.
            if codes and all(500 <= code < 600 for code in codes):
                raise PermanentChannelError(
                    f"the mail server refused every recipient ({', '.join(map(str, codes))}): the addresses do not exist "
                    f"or may not receive mail there; {FIX}") from error
            raise
        except smtplib.SMTPSenderRefused as error:
            if 500 <= error.smtp_code < 600:
                raise PermanentChannelError(
                    f"the mail server refused the sender address ({error.smtp_code}): DEFAULT_FROM_EMAIL may not send "
                    "through it; fix the mail settings and turn the channel back on") from error
            raise


# What an HTTP endpoint's status means for good, in the operator's words. Everything else (5xx,
# 429, 408, other 4xx, redirects) is taken as temporary: retried with back-off.
PERMANENT_HTTP = {
    401: "it refused Jobwatch's credentials: the token in the URL is wrong or was revoked",
    403: "it refused Jobwatch: the token in the URL is wrong or was revoked, or posting is not allowed",
    404: "the URL is wrong or the webhook was deleted",
    405: "the URL does not take posts: it is not a webhook's address",
    410: "the webhook was deleted",
}


@register
class WebhookChannel(Channel):
    """The notification's payload, posted as JSON to a URL."""

    kind = NotificationChannel.Kind.WEBHOOK.value
    label = "webhook"

    @classmethod
    def validate_target(cls, target):
        url = str(target or "").strip()
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 -- a port that is not a number raises here, not at every send
        except ValueError:
            host, parts = None, None
        if not parts or parts.scheme not in ("http", "https") or not host:
            raise PermanentChannelError(
                f"the target is not a web address Jobwatch can post to (it needs http:// or https:// and a host); {FIX}")
        return url

    def body(self, payload, event=None):
        return payload

    def send(self, payload, event=None):
        try:
            post_json(self.target, self.body(payload, event), self.timeout)
        except urllib.error.HTTPError as error:
            answer = read_answer(error)
            reason = self.permanent_reason(error.code, answer)
            if reason:
                raise PermanentChannelError(f"the {self.label} answered {status_text(error.code)}: {reason}; {FIX}") from error
            raise

    def permanent_reason(self, status, answer):
        """Why an error answer is for good, or None if it is worth trying again."""
        return PERMANENT_HTTP.get(status)


# Slack answers a failed incoming-webhook post with one of these words as its whole body. They
# are its documented error codes (not prose), and none of them passes by trying again.
SLACK_PERMANENT = {
    "invalid_token": "Slack refused the webhook's token (invalid_token): the webhook was revoked or the URL mistyped",
    "no_service": "Slack has no such webhook (no_service): it was removed or disabled",
    "no_service_id": "Slack has no such webhook (no_service_id): the URL is mistyped",
    "no_team": "Slack has no such workspace (no_team): the URL is mistyped or the workspace is gone",
    "team_disabled": "the Slack workspace is disabled (team_disabled)",
    "channel_not_found": "the webhook's Slack channel is gone (channel_not_found)",
    "channel_is_archived": "the webhook's Slack channel is archived (channel_is_archived)",
    "action_prohibited": "the Slack workspace's admin has restricted the webhook (action_prohibited)",
    "posting_to_general_channel_denied": "only admins may post to the webhook's Slack channel (posting_to_general_channel_denied)",
}


@register
class SlackChannel(WebhookChannel):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): one line of text."""

    kind = NotificationChannel.Kind.SLACK.value
    label = "Slack webhook"

    def body(self, payload, event=None):
        return {"text": f"{self.subject(payload, event)}\n{payload['explanation']}" + (f"\n{payload['url']}" if payload.get("url") else "")}

    def permanent_reason(self, status, answer):
        if answer in SLACK_PERMANENT and 400 <= status < 500:
            return SLACK_PERMANENT[answer]
        return super().permanent_reason(status, answer)


def status_text(code):
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def read_answer(error):
    """The start of an error answer's body, as a word to look up (and the response closed)."""
    try:
        return (error.read(200) or b"").decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):  # a body cut short says nothing either way
        return ""
    finally:
        error.close()


# -- delivering ------------------------------------------------------------------------------------


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
        except PermanentChannelError as error:
            failed += 1
            record_permanent_failure(channel, notification, error, now)
            break  # the channel is off: the rest are abandoned with it
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


def error_message(error):
    return f"{type(error).__name__}: {error}"[:2000]


def record_failure(channel, notification, error, now):
    """A temporary failure: retried after a back-off; the channel is turned off after
    CHANNEL_MAX_FAILURES in a row."""
    message = error_message(error)
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


def record_permanent_failure(channel, notification, error, now):
    """A failure retrying will not fix: the notice is given up, the channel turned off at once
    with the reason, and no retry scheduled. Turning it back on in the admin starts it afresh."""
    reason = str(error)[:2000]
    # last_error keeps what the far side said, for whoever debugs it; the reason says what to do.
    cause = error.__cause__ or error
    message = error_message(cause)
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.ABANDONED, attempts=notification.attempts + 1, last_error=reason, claimed_until=None)
    Notification.objects.filter(channel=channel, status=Notification.Status.PENDING).update(status=Notification.Status.ABANDONED)
    NotificationChannel.objects.filter(pk=channel.pk).update(
        enabled=False, disabled_reason=reason, consecutive_failures=channel.consecutive_failures + 1, last_error=message,
        last_failure_at=now, next_attempt_at=None)
    logger.error("Jobwatch turned the notification channel %s off: %s", channel.name, reason)


def send(channel, payload, event):
    """Send one notification to one channel (a NotificationChannel), by its kind's class."""
    channel_for(channel).send(payload, event)


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
    """A test message to one channel, now; raises if it cannot be sent (PermanentChannelError,
    saying what to fix, when retrying would not help). A test failing does not turn the channel off."""
    payload = {"event": "test", "severity": "info", "title": f"Test from Jobwatch to {channel.name}", "kind": "test",
               "subject": channel.name, "explanation": "If you can read this, the channel works.", "evidence": {},
               "opened_at": timezone.now().isoformat(), "resolved_at": None, "url": setting("DASHBOARD_URL"), "incident": None}
    send(channel, payload, "test")

"""Notification channels: one class per kind behind one interface, looked up in a registry; a
failure that retrying will not fix (a URL that is gone, refused credentials, refused recipients, a
malformed target) turns the channel off at once and says why, while a temporary one (a timeout, a
refused connection, a 5xx, a 429) is retried with back-off until the consecutive-failure rule.

The far sides are real loopback servers: an HTTP server answering what a test says, and a small
SMTP server that accepts, refuses the login, or refuses recipients."""

import html
import json
import socket
import socketserver
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.utils import timezone

from monitors.alerts import channels, run_alerts
from monitors.alerts.channels import (
    CHANNEL_KINDS,
    Channel,
    PermanentChannelError,
    UnknownChannelKind,
    channel_class,
    deliver,
    register,
    send_test,
)
from monitors.heartbeats import WATCHED
from monitors.models import MonitorHeartbeat, Notification, NotificationChannel
from tests.test_alerts import at, finding

pytestmark = pytest.mark.django_db(transaction=True)
T0 = at(0)


# -- the far sides -------------------------------------------------------------------------------


class Endpoint(ThreadingHTTPServer):
    """A webhook endpoint on loopback: records each post; answers `status` with `body`, after
    `hang` seconds."""

    daemon_threads = True

    def __init__(self, status=200, body=b"", hang=0.0):
        super().__init__(("127.0.0.1", 0), EndpointHandler)
        self.received, self.status, self.body, self.hang = [], status, body, hang
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook/s3cret-token"


class EndpointHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        time.sleep(self.server.hang)
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    servers = []

    def start(status=200, body=b"", hang=0.0):
        servers.append(Endpoint(status, body, hang))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class SMTPServer(socketserver.ThreadingTCPServer):
    """Enough of an SMTP server on loopback for smtplib: EHLO offering AUTH PLAIN, then the
    answers a test sets for AUTH, MAIL and RCPT; accepted messages are kept."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, auth="235 2.7.0 Authentication successful", rcpt="250 2.1.5 OK"):
        super().__init__(("127.0.0.1", 0), SMTPHandler)
        self.auth, self.rcpt, self.messages, self.logins = auth, rcpt, [], 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]


class SMTPHandler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 loopback ESMTP")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-loopback\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                self.server.logins += 1
                self.reply(self.server.auth)
            elif verb == "RCPT":
                self.reply(self.server.rcpt)
            elif verb == "DATA":
                self.reply("354 go ahead")
                message = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    message.append(data)
                self.server.messages.append(b"".join(message).decode())
                self.reply("250 2.0.0 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # HELO, MAIL, RSET, NOOP
                self.reply("250 OK")


@pytest.fixture
def smtp(settings):
    """Mail goes through a loopback SMTP server, logging in as Django's mail settings say."""
    servers = []

    def start(**answers):
        server = SMTPServer(**answers)
        servers.append(server)
        options = {"host": "127.0.0.1", "port": server.port, "username": "jobwatch", "password": "wrong-or-right",
                   "use_tls": False, "timeout": 5}
        if hasattr(mail, "mailers"):  # Django 6.1's MAILERS
            settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": options}}
        else:
            settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
            settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
            settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = options["username"], options["password"]
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- helpers -------------------------------------------------------------------------------------


def payload(title="Circuit payment-gateway is open"):
    return {"event": "opened", "severity": "warning", "title": title, "kind": "circuit_open", "subject": "payment-gateway",
            "explanation": "Calls failed.", "evidence": {"jobs_waiting": 4}, "opened_at": T0.isoformat(),
            "resolved_at": None, "url": "", "incident": None}


def channel_with_notices(kind, target, notices=1):
    channel = NotificationChannel.objects.create(name="ops", kind=kind, target=target)
    for number in range(notices):
        Notification.objects.create(channel=channel, event="opened", sequence=number, created_at=T0 + timedelta(seconds=number),
                                    payload=payload(f"Problem {number}"))
    return channel


def assert_turned_off_at_once(channel, *words):
    channel.refresh_from_db()
    assert not channel.enabled and channel.next_attempt_at is None
    for word in words:
        assert word in channel.disabled_reason
    assert "s3cret" not in channel.disabled_reason  # a webhook's URL is its password
    statuses = list(Notification.objects.filter(channel=channel).order_by("pk").values_list("status", "attempts"))
    assert statuses[0] == ("abandoned", 1)  # failed, not to be retried
    assert all(status == "abandoned" for status, _ in statuses)  # the others are given up with the channel
    return channel


def assert_retried_later(channel, attempts=1):
    channel.refresh_from_db()
    assert channel.enabled and channel.disabled_reason == ""
    assert channel.consecutive_failures == attempts and channel.next_attempt_at > T0
    notice = Notification.objects.filter(channel=channel).order_by("pk").first()
    assert notice.status == "pending" and notice.attempts == attempts
    return channel


# -- the registry --------------------------------------------------------------------------------


def test_the_registry_has_a_class_for_every_kind_a_channel_can_have():
    assert set(CHANNEL_KINDS) == set(NotificationChannel.Kind.values) == {"email", "webhook", "slack"}
    for kind, cls in CHANNEL_KINDS.items():
        assert issubclass(cls, Channel) and cls.kind == kind and channel_class(kind) is cls


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(UnknownChannelKind, match=r"kind 'pager'.*email, slack, webhook"):
        channel_class("pager")
    with pytest.raises(TypeError, match="needs a kind"):
        register(type("Nameless", (Channel,), {}))
    with pytest.raises(ValueError, match="already registered"):
        register(type("AnotherEmail", (Channel,), {"kind": "email"}))
    assert set(CHANNEL_KINDS) == {"email", "webhook", "slack"}


def test_a_channel_of_an_unknown_kind_is_turned_off_naming_the_kinds_it_could_be(endpoint):
    server = endpoint()
    channel = channel_with_notices("pager", server.url)
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "'pager'", "email, slack, webhook")
    assert server.received == []  # not posted to as if it were a webhook


def test_a_registered_kind_is_what_delivery_uses(monkeypatch):
    sent = []

    class Recorder(Channel):
        kind = "recorder"

        @classmethod
        def validate_target(cls, target):
            return target.upper()

        def send(self, payload, event=None):
            sent.append((self.target, payload["title"], event))

    monkeypatch.setitem(CHANNEL_KINDS, "recorder", Recorder)
    channel_with_notices("recorder", "somewhere")
    assert deliver(T0) == {"ops": (1, 0)}
    assert sent == [("SOMEWHERE", "Problem 0", "opened")]


# -- webhooks ------------------------------------------------------------------------------------


def test_a_webhook_that_answers_200_is_sent_to(endpoint):
    server = endpoint(200)
    channel = channel_with_notices("webhook", server.url, notices=2)
    assert deliver(T0) == {"ops": (2, 0)}
    assert [item["title"] for item in server.received] == ["Problem 0", "Problem 1"]
    channel.refresh_from_db()
    assert channel.enabled and channel.consecutive_failures == 0 and channel.last_success_at is not None
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.parametrize(("status", "words"), [
    (404, ["404 Not Found", "the URL is wrong or the webhook was deleted", "fix the target and turn the channel back on"]),
    (410, ["410 Gone", "deleted"]),
    (401, ["401 Unauthorized", "credentials"]),
    (403, ["403 Forbidden", "revoked"]),
])
def test_a_webhook_that_is_gone_or_refuses_jobwatch_is_turned_off_at_once(endpoint, status, words):
    server = endpoint(status)
    channel = channel_with_notices("webhook", server.url, notices=3)
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "the webhook answered", *words)
    assert f"HTTP Error {status}" in channel.last_error  # what the far side said, for debugging
    assert len(server.received) == 1
    assert deliver(T0 + timedelta(hours=2)) == {}  # nothing is retried, ever
    assert len(server.received) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_webhook_that_fails_for_now_is_retried_with_back_off_until_the_failure_rule(endpoint, settings, status):
    settings.JOBWATCH = {**settings.JOBWATCH, "CHANNEL_MAX_FAILURES": 3}
    server = endpoint(status)
    channel = channel_with_notices("webhook", server.url)
    assert deliver(T0) == {"ops": (0, 1)}
    assert_retried_later(channel, attempts=1)
    assert channel.next_attempt_at == T0 + timedelta(seconds=10) and f"HTTP Error {status}" in channel.last_error
    assert deliver(T0 + timedelta(seconds=5)) == {}  # within the back-off
    deliver(T0 + timedelta(seconds=10))
    assert_retried_later(channel, attempts=2)
    assert len(server.received) == 2
    deliver(T0 + timedelta(seconds=40))
    channel.refresh_from_db()
    assert not channel.enabled and "3 failures in a row" in channel.disabled_reason
    assert Notification.objects.get().status == "abandoned" and len(server.received) == 3


def test_a_temporary_failure_then_success_starts_the_count_afresh(endpoint):
    server = endpoint(503)
    channel = channel_with_notices("webhook", server.url)
    deliver(T0)
    assert_retried_later(channel)
    server.status = 200
    assert deliver(T0 + timedelta(seconds=10)) == {"ops": (1, 0)}
    channel.refresh_from_db()
    assert channel.enabled and channel.consecutive_failures == 0 and channel.next_attempt_at is None


def test_a_webhook_that_times_out_is_retried(endpoint, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "CHANNEL_TIMEOUT": 0.5}
    server = endpoint(200, hang=2)
    channel = channel_with_notices("webhook", server.url)
    assert deliver(T0) == {"ops": (0, 1)}
    assert "timed out" in assert_retried_later(channel).last_error


def test_a_webhook_that_refuses_connections_is_retried(closed_port):
    channel = channel_with_notices("webhook", f"http://127.0.0.1:{closed_port}/hook")
    assert deliver(T0) == {"ops": (0, 1)}
    assert "refused" in assert_retried_later(channel).last_error.lower()


@pytest.mark.parametrize("target", ["not a url", "ftp://example.com/hook", "http://", "https://example.com:port/hook", ""])
def test_a_malformed_webhook_target_is_turned_off_without_a_request(target):
    channel = channel_with_notices("webhook", target or " ")
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "not a web address", "fix the target")


# -- Slack ---------------------------------------------------------------------------------------


def test_a_slack_webhook_gets_one_line_of_text(endpoint):
    server = endpoint(200, b"ok")
    channel_with_notices("slack", server.url)
    assert deliver(T0) == {"ops": (1, 0)}
    assert server.received == [{"text": "[warning] Problem 0\nCalls failed."}]


@pytest.mark.parametrize(("status", "answer"), [
    (403, b"invalid_token"), (404, b"no_service"), (404, b"channel_not_found"), (410, b"channel_is_archived"),
    (400, b"invalid_token"),
])
def test_slack_error_codes_that_retrying_will_not_fix_turn_it_off(endpoint, status, answer):
    server = endpoint(status, answer)
    channel = channel_with_notices("slack", server.url)
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "the Slack webhook answered", f"({answer.decode()})")


@pytest.mark.parametrize(("status", "answer"), [(400, b"something_new"), (500, b"rollup_error"), (429, b"rate_limited")])
def test_other_slack_answers_are_retried(endpoint, status, answer):
    channel = channel_with_notices("slack", endpoint(status, answer).url)
    deliver(T0)
    assert_retried_later(channel)


# -- email ---------------------------------------------------------------------------------------


def test_email_is_sent_through_django_mail():
    channel_with_notices("email", "oncall@example.com, On call <lead@example.com>")
    assert deliver(T0) == {"ops": (1, 0)}
    assert len(mail.outbox) == 1 and mail.outbox[0].subject == "[warning] Problem 0"
    assert mail.outbox[0].to == ["oncall@example.com", "On call <lead@example.com>"]


def test_email_through_a_real_smtp_server_is_delivered(smtp):
    server = smtp()
    channel = channel_with_notices("email", "oncall@example.com")
    assert deliver(T0) == {"ops": (1, 0)}
    assert server.logins == 1 and len(server.messages) == 1 and "Problem 0" in server.messages[0]
    channel.refresh_from_db()
    assert channel.enabled and channel.last_success_at is not None


def test_an_smtp_login_that_is_refused_turns_email_off_at_once(smtp):
    server = smtp(auth="535 5.7.8 Authentication credentials invalid")
    channel = channel_with_notices("email", "oncall@example.com", notices=2)
    assert deliver(T0) == {"ops": (0, 1)}
    channel = assert_turned_off_at_once(channel, "refused Jobwatch's login (535", "fix the mail settings")
    assert "SMTPAuthenticationError" in channel.last_error and server.messages == []


def test_recipients_all_refused_for_good_turn_email_off(smtp):
    smtp(rcpt="550 5.1.1 No such user")
    channel = channel_with_notices("email", "nobody@example.com, noone@example.com")
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "refused every recipient (550)")


def test_recipients_refused_for_now_are_retried(smtp):
    smtp(rcpt="450 4.2.1 Mailbox busy, try later")
    channel = channel_with_notices("email", "oncall@example.com")
    deliver(T0)
    assert "SMTPRecipientsRefused" in assert_retried_later(channel).last_error


def test_a_mail_server_that_is_not_there_is_retried(smtp, closed_port, settings):
    smtp()
    if hasattr(mail, "mailers"):
        settings.MAILERS = {"default": {**settings.MAILERS["default"],
                                        "OPTIONS": {**settings.MAILERS["default"]["OPTIONS"], "port": closed_port}}}
    else:
        settings.EMAIL_PORT = closed_port
    channel = channel_with_notices("email", "oncall@example.com")
    deliver(T0)
    assert "refused" in assert_retried_later(channel).last_error.lower()


@pytest.mark.parametrize("target", ["oncall", "oncall@example.com, not an address", " , "])
def test_a_malformed_email_target_is_turned_off_without_sending(target):
    channel = channel_with_notices("email", target)
    assert deliver(T0) == {"ops": (0, 1)}
    assert_turned_off_at_once(channel, "fix the target")
    assert mail.outbox == []


# -- seen by people ------------------------------------------------------------------------------


def test_a_test_message_that_fails_for_good_says_why_and_leaves_the_channel_on(endpoint):
    channel = NotificationChannel.objects.create(name="ops", kind="webhook", target=endpoint(404).url)
    with pytest.raises(PermanentChannelError, match="404 Not Found"):
        send_test(channel)
    channel.refresh_from_db()
    assert channel.enabled and channel.disabled_reason == ""


def test_the_alerts_page_and_its_api_say_why_a_channel_was_turned_off(endpoint):
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=timezone.now() + timedelta(days=1))
    server = endpoint(404)
    NotificationChannel.objects.create(name="ops", kind="webhook", target=server.url)
    finding()
    run_alerts(at(31))
    channel = NotificationChannel.objects.get()
    assert not channel.enabled and len(server.received) == 1
    run_alerts(at(31 + 3600))
    assert len(server.received) == 1

    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    page = client.get("/jobwatch/alerts/").content.decode()
    assert "Channel ops" in page and "is turned off" in page and html.escape(channel.disabled_reason) in page
    assert server.url not in page
    status = client.get("/jobwatch/api/alerts/").json()["channel_status"]
    assert status[0]["enabled"] is False and status[0]["disabled_reason"] == channel.disabled_reason


def test_the_module_keeps_the_names_other_modules_use():
    for name in ("sync_channels_from_settings", "deliver", "deliver_channel", "claim", "record_failure", "send",
                 "post_json", "email_body", "send_test"):
        assert callable(getattr(channels, name))

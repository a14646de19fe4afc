"""Run the demo payment gateway (demo/gateway.py) in the foreground."""

import signal
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from demo.gateway import OUTAGE_MODES, start


def configured_port():
    """The port of settings.DEMO_GATEWAY_URL, so the gateway listens where the charge job calls."""
    return urlsplit(settings.DEMO_GATEWAY_URL).port or 8765


class Command(BaseCommand):
    help = (
        "Run the demo payment gateway that the shop's charge job calls, until Ctrl-C or SIGTERM. "
        "Switch it with POST /control/down (JSON body, optional: {\"seconds\": 30, \"mode\": \"drop\"}), "
        "POST /control/up; read its counters with GET /control/status."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument(
            "--port", type=int, default=None,
            help="port to listen on (default: the port of settings.DEMO_GATEWAY_URL, 8765 unless changed)",
        )
        parser.add_argument("--down", action="store_true", help="start down, as if in an outage")
        parser.add_argument(
            "--outage-mode", choices=sorted(OUTAGE_MODES), default="refuse",
            help="how a down gateway fails a charge: refuse (503 at once, the default), drop (close the "
                 "connection without an answer) or hang (answer only after the client has timed out)",
        )

    def handle(self, host, port, down, outage_mode, **options):
        port = configured_port() if port is None else port
        stop_requested = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop_requested.set())
        try:
            gateway = start(port, host, up=not down, outage_mode=outage_mode, announce=self.say)
        except OSError as error:
            raise CommandError(f"The demo gateway cannot listen on {host}:{port}: {error}") from None
        state = "up" if not down else f"DOWN ({outage_mode})"
        self.say(f"demo payment gateway listening on {gateway.url}, {state}")
        # A timed wait, so the signal handler's flag is seen promptly on every platform.
        while not stop_requested.wait(0.5):
            pass
        gateway.stop()
        stats = gateway.stats()
        self.say(
            f"stopped: {stats['calls_total']} charge calls, {stats['charges_accepted']} accepted, "
            f"{stats['charges_refused']} refused"
        )

    def say(self, message):
        self.stdout.write(f"{timezone.now():%H:%M:%S} {message}")
        self.stdout.flush()

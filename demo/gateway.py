"""The demo payment gateway: the external service the shop's charge job calls.

A real gateway fails in one of three ways, and a circuit breaker has to cope with each: it answers
503 at once ("refuse"), it drops the connection without an answer ("drop"), or it stops answering
until the client gives up ("hang"). Whatever its state, the gateway counts every charge call that
reaches it, so a test can tell how many calls got through while a circuit was supposed to be open.

Run it with `manage.py demo_gateway`, or in a thread from a test:

    gateway = start(port=0)
    gateway.set_up(False)
    ...  gateway.stats()["calls_total"]  ...
    gateway.stop()

The control endpoints (POST /control/down, POST /control/up, GET /control/status) let another
process, such as `manage.py demo_workload --gateway-outage`, switch it; `set_gateway_up` and
`gateway_status` below are their client.
"""

import json
import secrets
import threading
import time
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUTAGE_MODES = {
    "refuse": "charges get 503",
    "drop": "charges get their connection dropped",
    "hang": "charges get no answer until the client times out",
}
# Longer than the shop's client timeout (3 s in demo/gateway_client.py), so a hung charge times out
# there; a hung call is released early when the gateway comes back up or stops.
HANG_SECONDS = 10.0


class PaymentGateway(ThreadingHTTPServer):
    """The gateway's server, its up/down switch and its counters, shared by all request threads."""

    daemon_threads = True

    def __init__(self, host="127.0.0.1", port=0, up=True, outage_mode="refuse", announce=None):
        if outage_mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {outage_mode!r}; use one of {', '.join(OUTAGE_MODES)}")
        super().__init__((host, port), GatewayRequestHandler)
        self.announce = announce or (lambda message: None)
        self.outage_mode = outage_mode
        self.charges_accepted = 0
        self.charges_refused = 0
        self.calls_total = 0
        self.warehouse_calls = 0
        self._lock = threading.Lock()
        self._up = up
        self._down_since = None if up else time.monotonic()
        # Set while up: hung calls wait on it, so they end as soon as the outage does.
        self._back_up = threading.Event()
        if up:
            self._back_up.set()
        self._recovery_timer = None
        self._serving_thread = None

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def is_up(self):
        with self._lock:
            return self._up

    def set_up(self, up, outage_mode=None, seconds=None):
        """Bring the gateway up or take it down; a down with `seconds` comes back up by itself,
        so an outage outlives neither a crashed caller nor its planned length."""
        if outage_mode is not None and outage_mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {outage_mode!r}; use one of {', '.join(OUTAGE_MODES)}")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds <= 0):
            raise ValueError(f"seconds must be a positive number, not {seconds!r}")
        with self._lock:
            was_up, self._up = self._up, up
            if outage_mode is not None:
                self.outage_mode = outage_mode
            self._cancel_recovery_timer()
            if not up and seconds:
                self._recovery_timer = threading.Timer(seconds, self.set_up, args=(True,))
                self._recovery_timer.daemon = True
                self._recovery_timer.start()
            down_for = time.monotonic() - self._down_since if self._down_since else 0.0
            self._down_since = None if up else (self._down_since or time.monotonic())
        if up:
            self._back_up.set()
            if not was_up:
                self.announce(f"gateway UP again after {down_for:.0f} s down")
        else:
            self._back_up.clear()
            length = f" for {seconds:g} s" if seconds else ""
            self.announce(f"gateway DOWN{length} ({self.outage_mode}: {OUTAGE_MODES[self.outage_mode]})")

    def _cancel_recovery_timer(self):
        if self._recovery_timer is not None:
            self._recovery_timer.cancel()
            self._recovery_timer = None

    def count_call(self, outcome):
        """Count a charge call that reached the gateway: "accepted", "refused" or "malformed"
        (a malformed call counts in the total only)."""
        with self._lock:
            self.calls_total += 1
            if outcome == "accepted":
                self.charges_accepted += 1
            elif outcome == "refused":
                self.charges_refused += 1

    def count_warehouse_call(self):
        with self._lock:
            self.warehouse_calls += 1

    def stats(self):
        with self._lock:
            return {
                "up": self._up,
                "outage_mode": self.outage_mode,
                "charges_accepted": self.charges_accepted,
                "charges_refused": self.charges_refused,
                "calls_total": self.calls_total,
                "warehouse_calls": self.warehouse_calls,
            }

    def wait_until_up(self, timeout):
        return self._back_up.wait(timeout)

    def serve_in_thread(self):
        self._serving_thread = threading.Thread(target=self.serve_forever, name="demo-gateway", daemon=True)
        self._serving_thread.start()
        return self

    def stop(self):
        """Stop serving and release hung calls. Safe to call twice."""
        with self._lock:
            self._cancel_recovery_timer()
        self._back_up.set()
        if self._serving_thread is not None:
            self.shutdown()
            self._serving_thread.join()
            self._serving_thread = None
        self.server_close()

    def __exit__(self, *exc_info):
        self.stop()


class GatewayRequestHandler(BaseHTTPRequestHandler):
    server_version = "DemoGateway/1.0"

    def do_POST(self):
        routes = {"/charge": self.charge, "/warehouse": self.warehouse, "/control/down": self.take_down,
                  "/control/up": self.bring_up}
        self.dispatch(routes)

    def do_GET(self):
        self.dispatch({"/control/status": self.status})

    def dispatch(self, routes):
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.command} {self.path}"})
            return
        try:
            route()
        except ConnectionError:
            # A client that timed out or hung up before the answer: what an outage is for, not a bug.
            self.close_connection = True

    def charge(self):
        body = self.read_json()
        if not self.server.is_up():
            self.server.count_call("refused")
            self.fail_as_outage()
            return
        payment_id, amount_cents = body.get("payment_id"), body.get("amount_cents")
        if not isinstance(payment_id, int) or not isinstance(amount_cents, int) or amount_cents < 0:
            self.server.count_call("malformed")
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": "send {\"payment_id\": int, \"amount_cents\": int >= 0}"})
            return
        self.server.count_call("accepted")
        self.send_json(HTTPStatus.OK, {"reference": f"ch_{secrets.token_hex(12)}"})

    def warehouse(self):
        """The shop's warehouse lives on the same server: it is down when the gateway is. Its
        calls are counted apart from charges."""
        body = self.read_json()
        self.server.count_warehouse_call()
        if not self.server.is_up():
            self.fail_as_outage()
            return
        if not isinstance(body.get("order_id"), int):
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": "send {\"order_id\": int}"})
            return
        self.send_json(HTTPStatus.OK, {"reference": f"sh_{secrets.token_hex(8)}"})

    def fail_as_outage(self):
        mode = self.server.outage_mode
        if mode == "drop":
            self.close_connection = True  # close without a status line: the client sees a reset
            return
        if mode == "hang":
            self.server.wait_until_up(HANG_SECONDS)
        self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "payment gateway unavailable"})

    def take_down(self):
        body = self.read_json()
        try:
            self.server.set_up(False, outage_mode=body.get("mode"), seconds=body.get("seconds"))
        except ValueError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.status()

    def bring_up(self):
        self.read_json()
        self.server.set_up(True)
        self.status()

    def status(self):
        self.send_json(HTTPStatus.OK, self.server.stats())

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def send_json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Quiet: at demo rates a line per call would drown the other processes' output."""


def start(port=0, host="127.0.0.1", up=True, outage_mode="refuse", announce=None):
    """A gateway serving in a background thread; port 0 picks a free port (see `.url`)."""
    return PaymentGateway(host, port, up=up, outage_mode=outage_mode, announce=announce).serve_in_thread()


def set_gateway_up(base_url, up, seconds=None, outage_mode=None, timeout=2.0):
    """Switch the gateway at base_url through its control endpoint; returns its status.
    Raises OSError when it cannot be reached."""
    if up:
        return _call_control(f"{base_url}/control/up", {}, timeout)
    body = {key: value for key, value in (("seconds", seconds), ("mode", outage_mode)) if value is not None}
    return _call_control(f"{base_url}/control/down", body, timeout)


def gateway_status(base_url, timeout=2.0):
    with urllib.request.urlopen(f"{base_url}/control/status", timeout=timeout) as response:
        return json.load(response)


def _call_control(url, body, timeout):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)

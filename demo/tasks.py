"""The shop's jobs. Each loads its record first, as real jobs do: a missing record raises
DoesNotExist, which is what an orphaned job looks like from the inside."""

import time

from celery import shared_task
from django.conf import settings

from demo.gateway_client import GatewayError
from demo.models import Customer, Order, Payment
from monitors.circuits import circuit
from monitors.references import references

# The shop's payment gateway is behind a circuit breaker shared by every worker: after five
# failed charges in a row (or half the charges of a minute) the workers stop calling it for 30 s,
# and charge jobs wait instead of failing. settings.JOBWATCH["CIRCUITS"] can tune it.
payment_gateway = circuit("payment-gateway", fail_max=5, reset_timeout=30, trial_calls=1)


@shared_task
@references(customer_id="demo.Customer")
def sync_customer_to_crm(customer_id):
    customer = Customer.objects.get(pk=customer_id)
    return {"synced": customer.email}


@shared_task
@references(customer_id="demo.Customer")
def refresh_customer_segments(customer_id):
    customer = Customer.objects.get(pk=customer_id)
    return {"segment": customer.tier}


@shared_task
@references(customer_id="demo.Customer")
def index_customer(customer_id):
    customer = Customer.objects.get(pk=customer_id)
    return {"indexed": customer.name}


@shared_task
@references(order_id="demo.Order")
def send_order_confirmation(order_id):
    order = Order.objects.select_related("customer").get(pk=order_id)
    return {"emailed": order.customer.email}


@shared_task
@references(order_id="demo.Order")
def reserve_inventory(order_id):
    order = Order.objects.get(pk=order_id)
    return {"reserved_for": order.pk}


# A failed charge is retried with back-off; while the circuit is open the job waits on it
# instead, which costs none of its five retries.
@shared_task(bind=True, max_retries=5, autoretry_for=(GatewayError,), retry_backoff=2, retry_backoff_max=60)
@references(payment_id="demo.Payment")
def charge_payment(self, payment_id):
    from demo.gateway_client import charge

    payment = Payment.objects.select_related("order").get(pk=payment_id)
    with payment_gateway:
        reference = charge(settings.DEMO_GATEWAY_URL, payment.pk, payment.amount_cents)
    Payment.objects.filter(pk=payment.pk).update(status="charged", gateway_reference=reference)
    return {"charged": reference}


@shared_task
@references(order_id="demo.Order")
def notify_warehouse(order_id):
    """Tells the warehouse (on the demo gateway's server, down when the gateway is) to ship an
    order. No circuit breaker here, on purpose: the monitor's "failing without a breaker" finding
    points at it during an outage."""
    from demo.gateway_client import notify_warehouse as send_notice

    order = Order.objects.get(pk=order_id)
    return {"shipping": send_notice(settings.DEMO_GATEWAY_URL, order.pk)}


@shared_task
def generate_invoices(order_ids):
    """A task that enqueues tasks: one confirmation per order (the parent/child origin case)."""
    for order_id in order_ids:
        send_order_confirmation.delay(order_id)
    return len(order_ids)


# -- the shop's periodic tasks (dashboard/settings.py schedules them for the demo) -------------------

# The partner's stock feed is down for minutes 5–11 of every 20 (by the clock): the import's runs
# fail then, and the Periodic tasks page has failing runs to show within the demo's first 20 minutes.
FEED_DOWN_MINUTES = range(5, 12)
PARTNER_FEED = ("127.0.0.1", 9)  # the discard port, which nothing listens on: connections are refused


@shared_task
def import_partner_stock():
    """Reads the partner's stock feed (a minute-by-minute import); its trouble comes on the clock."""
    import socket

    if time.gmtime().tm_min % 20 in FEED_DOWN_MINUTES:
        socket.create_connection(PARTNER_FEED, timeout=2).close()  # ConnectionRefusedError: the feed is down
    time.sleep(0.2)
    return Customer.objects.count()


@shared_task
def refresh_exchange_rates():
    """A quick, healthy periodic task."""
    time.sleep(0.05)
    return 3


@shared_task
def send_daily_sales_report():
    """The nightly report: counts yesterday's orders."""
    return Order.objects.count()


@shared_task
def noop():
    """Does nothing: the unit of the recording benchmark."""


@shared_task
def sleep_for(seconds):
    time.sleep(seconds)


@shared_task(bind=True, max_retries=3)
def flaky(self, failures):
    """Fails `failures` times with a retry, then succeeds (the retry lifecycle)."""
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError("flaky service"), countdown=0)
    return self.request.retries


@shared_task
def echo(*args, **kwargs):
    """Returns how many arguments it got; for checking what the recorder keeps of arguments."""
    return len(args) + len(kwargs)


@shared_task
def call_partner(url, payload, api_token=""):
    """Posts an update to a partner's API, authenticated by a token (no breaker). The token is
    redacted in the execution table; when the call fails, the full arguments are kept so that a
    replay sends them as they were."""
    import json
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_token}"})
    with urllib.request.urlopen(request, timeout=3) as response:
        return response.status

"""The shop's jobs. Each loads its record first, as real jobs do: a missing record raises
DoesNotExist, which is what an orphaned job looks like from the inside."""

import time

from celery import shared_task
from django.conf import settings

from demo.models import Customer, Order, Payment
from monitors.references import references


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


@shared_task(bind=True, max_retries=5)
@references(payment_id="demo.Payment")
def charge_payment(self, payment_id):
    from demo.gateway_client import charge

    payment = Payment.objects.select_related("order").get(pk=payment_id)
    reference = charge(settings.DEMO_GATEWAY_URL, payment.pk, payment.amount_cents)
    Payment.objects.filter(pk=payment.pk).update(status="charged", gateway_reference=reference)
    return {"charged": reference}


@shared_task
def generate_invoices(order_ids):
    """A task that enqueues tasks: one confirmation per order (the parent/child origin case)."""
    for order_id in order_ids:
        send_order_confirmation.delay(order_id)
    return len(order_ids)


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

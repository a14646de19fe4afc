"""The shop's post_save receivers: some right, some wrong, all common in real code.

- Customer: three receivers fire on *every* save, even one that only touches `last_seen_at`
  (a callback fan-out: every page view becomes three jobs).
- Order: the confirmation email is deferred until commit (right); the inventory reservation is
  enqueued inside the transaction with plain .delay() (wrong: a rollback leaves an orphan job,
  and a fast worker can run it before the commit).
- Payment: the charge is deferred with transaction.on_commit in a lambda (right).
"""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from demo import tasks
from demo.models import Customer, Order, Payment


@receiver(post_save, sender=Customer)
def sync_customer_to_crm(sender, instance, created, **kwargs):
    tasks.sync_customer_to_crm.delay(instance.pk)


@receiver(post_save, sender=Customer)
def refresh_customer_segments(sender, instance, created, **kwargs):
    tasks.refresh_customer_segments.delay(instance.pk)


@receiver(post_save, sender=Customer)
def reindex_customer(sender, instance, created, **kwargs):
    transaction.on_commit(lambda: tasks.index_customer.delay(instance.pk))


@receiver(post_save, sender=Order)
def confirm_order(sender, instance, created, **kwargs):
    if created:
        tasks.send_order_confirmation.delay_on_commit(instance.pk)


@receiver(post_save, sender=Order)
def reserve_inventory(sender, instance, created, **kwargs):
    if created:
        tasks.reserve_inventory.delay(instance.pk)


@receiver(post_save, sender=Payment)
def charge_payment(sender, instance, created, **kwargs):
    if created:
        transaction.on_commit(lambda: tasks.charge_payment.delay(instance.pk))

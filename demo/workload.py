"""The shop's customers at work: the actions `manage.py demo_workload` drives, and when its trouble
happens.

Every action goes through the shop's models, so its jobs are enqueued by the shop's own receivers
(demo/receivers.py) through the normal Celery app, and the recorder sees them as it would in
production. Each action returns the name under which the workload counts it.
"""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from demo.models import Customer, Order, Payment

FIRST_NAMES = ["Ada", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena"]
LAST_NAMES = ["Okafor", "Silva", "Novak", "Tanaka", "Moreau", "Haddad", "Larsen", "Quispe", "Weber", "Ivanova"]
TIERS = ["standard", "standard", "standard", "silver", "gold"]

# Visits pick among this many of the most recent customers: enough variety, bounded memory.
CUSTOMERS_REMEMBERED = 1000

# A normal minute in the shop: what share of actions are sign-ups, visits, orders and shipments.
NORMAL_MIX = {"create customer": 0.15, "visit": 0.50, "place order": 0.30, "ship order": 0.05}
# During a storm, visits come this many times as fast (the rest of the shop carries on as usual).
STORM_FACTOR = 10


class CheckoutAbandoned(Exception):
    """Raised inside an order's transaction to roll it back on purpose."""


class Shop:
    """The shop's actions on a pool of known customers; every random choice comes from `rng`, so a
    seed repeats the same run of choices."""

    def __init__(self, rng):
        self.rng = rng
        recent = Customer.objects.order_by("-pk").values_list("pk", flat=True)[:CUSTOMERS_REMEMBERED]
        self.customer_ids = list(recent)[::-1]  # oldest first, so _remember drops from the front

    def create_customer(self):
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        customer = Customer.objects.create(
            name=f"{first} {last}",
            email=f"{first}.{last}.{self.rng.randrange(10**6)}@example.com".lower(),
            tier=self.rng.choice(TIERS),
        )
        self._remember(customer.pk)
        return "customers created"

    def record_visit(self):
        """A page view that only touches last_seen_at, yet sets off all three Customer receivers."""
        customer = Customer.objects.get(pk=self._some_customer_id())
        customer.last_seen_at = timezone.now()
        customer.save(update_fields=["last_seen_at"])
        return "visits"

    def place_order(self, roll_back=False, delete_after_commit=False):
        """An order and its payment in one transaction, as a checkout view would save them.

        Rolled back after the Order is saved, the inventory job (enqueued inside the transaction)
        is left pointing at an order that never existed. Deleted right after the commit, all three
        jobs look for an order that is gone by the time a worker runs them.
        """
        customer_id = self._some_customer_id()
        total_cents = self.rng.randrange(500, 25_000)
        try:
            with transaction.atomic():
                order = Order.objects.create(customer_id=customer_id, total_cents=total_cents)
                if roll_back:
                    raise CheckoutAbandoned(f"checkout of {order} abandoned on purpose")
                Payment.objects.create(order=order, amount_cents=total_cents)
        except CheckoutAbandoned:
            return "orders rolled back"
        if delete_after_commit:
            order.delete()
            return "orders deleted after commit"
        return "orders placed"

    def ship_order(self):
        """The warehouse is told to ship the latest order (its job has no circuit breaker)."""
        from demo.tasks import notify_warehouse

        latest = Order.objects.order_by("-pk").values_list("pk", flat=True).first()
        if latest is None:
            return self.place_order()
        notify_warehouse.delay(latest)
        return "orders shipped"

    def retier_customers(self, count):
        """The bulk loop: one transaction saving `count` customers one by one (a nightly re-tiering
        script), every save setting off the Customer receivers. Returns how many it saved."""
        if not self.customer_ids:
            self.create_customer()
        chosen = self.rng.sample(self.customer_ids, min(count, len(self.customer_ids)))
        new_tiers = {customer_id: self.rng.choice(TIERS) for customer_id in chosen}
        with transaction.atomic():
            for customer in Customer.objects.filter(pk__in=chosen).order_by("pk"):
                customer.tier = new_tiers[customer.pk]
                customer.save()
        return len(chosen)

    def _some_customer_id(self):
        if not self.customer_ids:
            self.create_customer()
        return self.rng.choice(self.customer_ids)

    def _remember(self, customer_id):
        self.customer_ids.append(customer_id)
        if len(self.customer_ids) > CUSTOMERS_REMEMBERED:
            del self.customer_ids[0]


@dataclass
class TroublePlan:
    """When the trouble happens: windows in a cycle that repeats for as long as the run lasts.

    The storm starts a third of the way into each cycle and the gateway outage half way; each is
    cut short at the end of its cycle. A run with a duration is one cycle, so its storm starts
    after a third of it.
    """

    cycle: float
    storm_seconds: float = 0
    outage_seconds: float = 0

    @property
    def storm_starts(self):
        return self.cycle / 3

    @property
    def storm_length(self):
        return min(self.storm_seconds, self.cycle - self.storm_starts)

    @property
    def outage_starts(self):
        return self.cycle / 2

    @property
    def outage_length(self):
        return min(self.outage_seconds, self.cycle - self.outage_starts)

    def storming(self, elapsed):
        return self._within(elapsed, self.storm_starts, self.storm_length)

    def gateway_down(self, elapsed):
        return self._within(elapsed, self.outage_starts, self.outage_length)

    def _within(self, elapsed, start, length):
        phase = elapsed % self.cycle
        return length > 0 and start <= phase < start + length


def action_mix(storming):
    """The actions' weights now; a storm multiplies the visits and leaves the rest alone."""
    if not storming:
        return dict(NORMAL_MIX)
    return {**NORMAL_MIX, "visit": NORMAL_MIX["visit"] * STORM_FACTOR}


def actions_per_second(rate, storming):
    """`rate` is the normal pace; in a storm the extra visits come on top of it."""
    return rate * sum(action_mix(storming).values()) / sum(NORMAL_MIX.values())

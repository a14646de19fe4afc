"""The faults benchmarks/signal_scorecard.py plants, one per scenario, and what Jobwatch should say about each.

Every fault is planted through the demo shop (demo/models.py, receivers.py, tasks.py, workload.py)
from the benchmark's own process, so the recorder there sees the enqueues as it would in a web
process. Each scenario says:

- what it plants (`plant(stage)`, run in a thread while the benchmark watches);
- which incident is the right one: its lead finding's kind and subject (`right`);
- which planted jobs count for recall (`planted`) and how the right incident's evidence is read to
  find them (`found`, with `recall_method` in words).

No threshold is changed: every fault is planted big enough for Jobwatch's defaults.
"""

import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from demo import tasks
from demo.models import Customer, Order, Payment
from demo.workload import NORMAL_MIX, CheckoutAbandoned, Shop
from monitors.models import JobExecution

# Customers created (without jobs: bulk_create sends no post_save) before the worker starts, so
# that every scenario's shop has people to visit and to sell to.
CUSTOMERS = 200
# The healthy shop's pace, and its mix: the demo's normal minute without the visits. A visit saves
# only last_seen_at and still enqueues three jobs: that is the trivial_saves fault, not health.
# Orders are saved without the checkout's transaction (see place_order_in_autocommit).
HEALTHY_RATE = 1.0
HEALTHY_MIX = {action: weight for action, weight in NORMAL_MIX.items() if action != "visit"}
ORPHAN_ERROR = ".DoesNotExist"


@dataclass
class Stage:
    """What a plant needs, and what it published: filled in by the benchmark's run."""

    name: str
    shop: Shop
    stop: threading.Event
    partner_url: str = ""  # the failing service of service_down_urllib
    published: list = field(default_factory=list)  # (task name, task id), in publish order
    customer_ids: list = field(default_factory=list)

    def published_ids(self, *task_names):
        return [task_id for name, task_id in self.published if not task_names or name in task_names]


@dataclass
class Scenario:
    name: str
    fault: str  # what is planted, in one line
    plant: object  # plant(stage)
    expected: str = ""  # the right incident's lead finding, in words
    right: object = None  # right(lead finding, stage) -> bool
    planted: object = None  # planted(stage) -> [task id], the recall's denominator
    found: object = None  # found(findings of the right incident, planted ids, stage) -> how many of them
    recall_method: str = ""
    gateway_up: bool = True  # the demo payment gateway the worker's charges call
    # A fault pages; a code smell (info on DESIGN.md's scale) is shown and never paged.
    paged: bool = True
    observe_seconds: float = 0  # a fixed observation (healthy); faults stop after their first page


# -- pacing --------------------------------------------------------------------------------------


def paced(count, seconds, action, stop):
    """Call action(i) `count` times spread evenly over `seconds`, until `stop` is set."""
    started = time.monotonic()
    for index in range(count):
        if stop.is_set():
            return
        due = started + index * seconds / count
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        action(index)


def record_visit(customer_id):
    """A page view, as Shop.record_visit saves it, on a chosen customer (so that no customer is
    visited three times within the duplicates window: that would be another fault)."""
    customer = Customer.objects.get(pk=customer_id)
    customer.last_seen_at = timezone.now()
    customer.save(update_fields=["last_seen_at"])


# -- the plants ----------------------------------------------------------------------------------


def place_order_in_autocommit(shop):
    """An order and its payment, each saved on its own: reserve_inventory is enqueued once the
    order is committed. The demo's checkout (Shop.place_order) saves both in one transaction, and
    the worker regularly runs reserve_inventory (enqueued inside it) before the commit: a real
    orphan, which is the ran_before_commit fault, not health."""
    order = Order.objects.create(customer_id=shop.rng.choice(shop.customer_ids), total_cents=shop.rng.randrange(500, 25_000))
    Payment.objects.create(order=order, amount_cents=order.total_cents)


def run_healthy_shop(stage, seconds=180):
    rng = random.Random(f"signal:{stage.name}:mix")
    actions = {"create customer": stage.shop.create_customer, "place order": lambda: place_order_in_autocommit(stage.shop),
               "ship order": stage.shop.ship_order}
    count = int(seconds * HEALTHY_RATE)
    paced(count, seconds, lambda _: actions[rng.choices(list(HEALTHY_MIX), weights=list(HEALTHY_MIX.values()))[0]](), stage.stop)


def save_storm(stage):
    """400 visits in 8 s: 1,200 enqueues from three Customer receivers."""
    paced(400, 8, lambda _: stage.shop.record_visit(), stage.stop)


def trivial_saves(stage):
    """30 visits to 30 different customers over 60 s: 90 jobs, at a page view every 2 s."""
    chosen = random.Random(f"signal:{stage.name}").sample(stage.customer_ids, 30)
    paced(len(chosen), 60, lambda index: record_visit(chosen[index]), stage.stop)


def rolled_back_orders(stage):
    """20 checkouts abandoned inside their transaction over 10 s: each leaves a reserve_inventory
    job for an order that never existed."""
    paced(20, 10, lambda _: stage.shop.place_order(roll_back=True), stage.stop)


def slow_commits(stage):
    """12 orders whose transaction stays open 1.5 s after the Order is saved: the worker picks up
    reserve_inventory (enqueued inside it) long before the commit, and fails with DoesNotExist."""

    def slow_order(_):
        try:
            with transaction.atomic():
                Order.objects.create(customer_id=stage.shop.rng.choice(stage.customer_ids), total_cents=1_999)
                if stage.stop.wait(1.5):
                    raise CheckoutAbandoned("benchmark stopped")
        except CheckoutAbandoned:
            pass

    paced(12, 18, slow_order, stage.stop)


def deleted_orders(stage):
    """30 orders deleted right after their commit, over 15 s, before their three jobs run."""
    paced(30, 15, lambda _: stage.shop.place_order(delete_after_commit=True), stage.stop)


def failing_partner_calls(stage):
    """40 calls, one a second, of a task with no breaker posting through plain urllib to a local
    service that answers 503 (demo.tasks.call_partner)."""
    paced(40, 40, lambda index: tasks.call_partner.delay(stage.partner_url, {"order": index}, api_token="signal-token"), stage.stop)


def charges_while_gateway_down(stage):
    """10 orders with a payment, over 5 s, while the payment gateway answers 503: charge_payment
    goes through the payment-gateway breaker, which opens after 5 failures. Saved outside a
    transaction, as the end-to-end test does, so that nothing else is wrong."""

    def order_and_charge(_):
        order = Order.objects.create(customer_id=stage.shop.rng.choice(stage.customer_ids), total_cents=2_500)
        Payment.objects.create(order=order, amount_cents=2_500)

    paced(10, 5, order_and_charge, stage.stop)


def jobs_nobody_consumes(stage):
    """200 jobs sent to the queue "reports", which no worker consumes, over 2 s."""
    from celery import current_app

    paced(200, 2, lambda _: current_app.send_task("demo.tasks.noop", queue="reports"), stage.stop)


def same_call_again_and_again(stage):
    """refresh_customer_segments for one customer, 30 times in 20 s (a view that enqueues on
    every request)."""
    customer_id = stage.customer_ids[0]
    paced(30, 20, lambda _: tasks.refresh_customer_segments.delay(customer_id), stage.stop)


# -- the right incident --------------------------------------------------------------------------


def lead_is(kind, subject_test):
    return lambda finding, stage: finding.kind == kind and subject_test(finding.subject or "", finding, stage)


def on_customer_saves(subject, finding, stage):
    return subject == "demo.Customer" or subject.startswith("demo.Customer:")


def orphans_because(cause, task=None):
    def test(subject, finding, stage):
        task_name, _, named_cause = subject.rpartition(":")
        return named_cause == cause and (finding.evidence or {}).get("cause", cause) == cause and (task is None or task_name == task)

    return test


def names_partner(subject, finding, stage):
    """The finding names the failing service's address, 127.0.0.1:<port>."""
    where = urlsplit(stage.partner_url).netloc
    return where in subject or where in ((finding.evidence or {}).get("target") or "")


SERVICE_KINDS = ("service_failing", "service_without_breaker")


# -- recall --------------------------------------------------------------------------------------


def by_job_ids(findings, planted, stage):
    """Planted jobs whose id the evidence lists (Finding.task_ids)."""
    listed = {task_id for finding in findings for task_id in finding.task_ids()}
    return sum(1 for task_id in planted if task_id in listed)


def receivers_named(findings):
    """Receivers the findings are about: in their subject (model:receiver), their evidence, their
    keys and links ("receiver:…")."""
    named = set()
    for finding in findings:
        named.update((finding.subject or "").split(":"))
        evidence = finding.evidence or {}
        for key in ("receiver", "origin_receiver"):
            if isinstance(evidence.get(key), str):
                named.add(evidence[key])
        for key in ("receivers", "enqueued_by"):
            named.update(evidence.get(key) or ())
        named.update(name.split(":", 1)[1] for name in [*(finding.keys or []), *(finding.links or [])]
                     if name.startswith("receiver:"))
    return named


def by_origin(findings, planted, stage):
    """Planted jobs whose receiver a finding of the incident names: the evidence keeps only ten
    sample ids, so a storm's jobs are found through the origin it names."""
    named = receivers_named(findings)
    receivers = JobExecution.objects.filter(task_id__in=planted).values_list("origin_receiver", flat=True)
    return sum(1 for receiver in receivers if receiver in named)


def by_count(count_of):
    """As many planted jobs as the evidence counts (it lists none of them), at most all of them."""

    def found(findings, planted, stage):
        counted = max((count_of(finding) or 0 for finding in findings), default=0)
        return min(counted, len(planted))

    return found


def by_job_ids_or_count(count_of):
    def found(findings, planted, stage):
        if any(finding.task_ids() for finding in findings):
            return by_job_ids(findings, planted, stage)
        return by_count(count_of)(findings, planted, stage)

    return found


def evidence_number(kinds, key, subject=None):
    def count_of(finding):
        if finding.kind not in kinds or (subject is not None and finding.subject != subject):
            return 0
        value = (finding.evidence or {}).get(key)
        return value if isinstance(value, int) else 0

    return count_of


def orphans_of(*task_names):
    """Planted jobs of these tasks that really were orphans: they failed because their record was
    missing (a job that ran before a delete, or after a slow commit, is not one)."""

    def planted(stage):
        ids = stage.published_ids(*task_names)
        return list(JobExecution.objects.filter(task_id__in=ids, state="failed", exception_type__endswith=ORPHAN_ERROR)
                    .values_list("task_id", flat=True))

    return planted


def published(*task_names):
    return lambda stage: stage.published_ids(*task_names)


ORDER_TASKS = ("demo.tasks.reserve_inventory", "demo.tasks.send_order_confirmation", "demo.tasks.charge_payment")
CUSTOMER_TASKS = ("demo.tasks.sync_customer_to_crm", "demo.tasks.refresh_customer_segments", "demo.tasks.index_customer")
ORIGIN_RECALL = "planted jobs whose receiver the incident's findings name (evidence keeps 10 sample ids, not every job)"

SCENARIOS = [
    Scenario(
        "healthy", f"a fresh start, then the shop at {HEALTHY_RATE:g} action/s for 180 s: sign-ups, orders (saved in "
        "autocommit) and shipments; no visits (the trivial-save fault), no checkout transaction (it races its own job)",
        run_healthy_shop, observe_seconds=185,
    ),
    Scenario(
        "storm", "400 visits in 8 s: 1,200 enqueues from three Customer receivers", save_storm,
        expected="fanout_storm on demo.Customer saves", right=lead_is("fanout_storm", on_customer_saves),
        planted=published(*CUSTOMER_TASKS), found=by_origin, recall_method=ORIGIN_RECALL,
    ),
    Scenario(
        "trivial_saves", "30 visits (saves of last_seen_at only) over 60 s: 90 jobs", trivial_saves,
        expected="trivial_save_enqueues on demo.Customer saves", right=lead_is("trivial_save_enqueues", on_customer_saves),
        planted=published(*CUSTOMER_TASKS), found=by_origin, recall_method=ORIGIN_RECALL, paged=False,
    ),
    Scenario(
        "rollbacks", "20 orders rolled back after reserve_inventory was enqueued inside the transaction", rolled_back_orders,
        expected="orphaned_jobs demo.tasks.reserve_inventory, cause rolled_back",
        right=lead_is("orphaned_jobs", orphans_because("rolled_back", "demo.tasks.reserve_inventory")),
        planted=published("demo.tasks.reserve_inventory"), found=by_job_ids,
        recall_method="planted reserve_inventory task ids listed in the evidence's job_ids",
    ),
    Scenario(
        "ran_before_commit", "12 orders committed 1.5 s after reserve_inventory was enqueued inside the transaction",
        slow_commits, expected="orphaned_jobs demo.tasks.reserve_inventory, cause ran_before_commit",
        right=lead_is("orphaned_jobs", orphans_because("ran_before_commit", "demo.tasks.reserve_inventory")),
        planted=orphans_of("demo.tasks.reserve_inventory"), found=by_job_ids,
        recall_method="reserve_inventory jobs that failed with DoesNotExist, found by task id in the evidence's job_ids",
    ),
    Scenario(
        "deleted", "30 orders deleted right after their commit", deleted_orders,
        expected="orphaned_jobs of an order task, cause deleted_after_enqueue",
        right=lead_is("orphaned_jobs", orphans_because("deleted_after_enqueue")),
        planted=orphans_of(*ORDER_TASKS), found=by_job_ids,
        recall_method="the deleted orders' jobs that failed with DoesNotExist (those that ran before the delete "
                      "succeeded and are not orphans), found by task id in the evidence's job_ids",
    ),
    Scenario(
        "service_down_urllib", "40 calls of demo.tasks.call_partner (no breaker, plain urllib) to a local service "
        "answering 503, one a second", failing_partner_calls,
        expected="service_failing (service_without_breaker before the services detector) naming 127.0.0.1:<port>",
        right=lambda finding, stage: finding.kind in SERVICE_KINDS and names_partner(finding.subject or "", finding, stage),
        planted=published("demo.tasks.call_partner"),
        found=by_job_ids_or_count(evidence_number(SERVICE_KINDS, "jobs")),
        recall_method="task ids in the evidence's job_ids when it lists them, otherwise the failed jobs it counts (evidence jobs)",
    ),
    Scenario(
        "circuit_open", "10 payments charged through the payment-gateway breaker while the gateway answers 503",
        charges_while_gateway_down, gateway_up=False,
        expected="circuit_open payment-gateway", right=lead_is("circuit_open", lambda subject, *_: subject == "payment-gateway"),
        planted=published("demo.tasks.charge_payment"),
        found=by_job_ids_or_count(lambda finding: finding.count if finding.kind == "circuit_open" else 0),
        recall_method="charge jobs the evidence counts as waiting behind the circuit or retrying (it lists no ids)",
    ),
    Scenario(
        "no_consumer", "200 demo.tasks.noop jobs sent to the queue reports, which no worker consumes", jobs_nobody_consumes,
        expected="queue_without_consumer reports", right=lead_is("queue_without_consumer", lambda subject, *_: subject == "reports"),
        planted=published("demo.tasks.noop"),
        found=by_count(lambda finding: (finding.evidence or {}).get("depth") if finding.subject == "reports" else 0),
        recall_method="jobs the evidence counts waiting in reports (its depth; queue evidence lists no ids)",
    ),
    Scenario(
        "duplicates", "refresh_customer_segments(same customer) enqueued 30 times in 20 s", same_call_again_and_again,
        expected="duplicate_enqueues demo.tasks.refresh_customer_segments",
        right=lead_is("duplicate_enqueues", lambda subject, *_: subject == "demo.tasks.refresh_customer_segments"),
        planted=published("demo.tasks.refresh_customer_segments"),
        found=by_job_ids_or_count(evidence_number(("duplicate_enqueues",), "enqueues", "demo.tasks.refresh_customer_segments")),
        recall_method="copies the evidence counts (evidence enqueues; it keeps 10 sample ids)", paged=False,
    ),
]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


# -- the failing service -------------------------------------------------------------------------


class FailingService(ThreadingHTTPServer):
    """A partner API that is down: every call gets 503 Service Unavailable (and is counted)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FailingServiceHandler)
        self.calls = 0
        threading.Thread(target=self.serve_forever, name="failing-service", daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/orders"


class FailingServiceHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.calls += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass

"""The detectors against ground truth: each scenario makes one real problem happen in the demo
shop, with a real worker on Redis and PostgreSQL, and checks that exactly the expected findings
open — no more (precision), no fewer (recall), with the right cause and counts. A healthy workload
of thousands of jobs must open none. Precision and recall per detector are written to
test-artifacts/detector-accuracy.json."""

import json
import time
from collections import defaultdict
from datetime import timedelta

import pytest
import redis
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from demo import tasks
from demo.models import Customer, Order, Payment
from monitors.detectors import run_detectors
from monitors.alerts import run_alerts
from monitors.models import Finding, Incident, JobExecution, QueueSample
from monitors.recording import signals
from monitors.sampling import sample_queues
from tests.workers import REPO, WorkerProcess, database_url_for_workers, fresh_redis_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

THRESHOLDS = {
    "FANOUT_WINDOW_SECONDS": 60,
    "FANOUT_BASELINE_SECONDS": 600,
    "FANOUT_STORM_MIN_PER_MINUTE": 30,
    "ORPHAN_COMMIT_GRACE_SECONDS": 0,
    "IN_TRANSACTION_MIN_JOBS": 5,
}
TALLY = defaultdict(lambda: {"true_positives": 0, "false_positives": 0, "false_negatives": 0})
DETECTOR_OF = {
    "fanout_storm": "fanout", "trivial_save_enqueues": "fanout", "duplicate_enqueues": "fanout", "bulk_loop": "fanout",
    "orphaned_jobs": "orphans", "enqueue_in_transaction": "orphans",
    "queue_too_long": "backlog", "queue_oldest_age": "backlog", "queue_growing": "backlog",
    "queue_without_consumer": "backlog", "stuck_jobs": "backlog", "failure_rate": "backlog",
    "circuit_open": "circuits", "circuit_flapping": "circuits", "service_failing": "services",
}


@pytest.fixture(scope="module", autouse=True)
def worker(django_db_setup, tmp_path_factory):
    # No beat in these scenarios, by design: the worker's watch on beat would rightly page its
    # absence once the module has run longer than the stale rule's grace (WATCHDOG_SECONDS 0: off).
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": fresh_redis_url(14),
           "DEMO_GATEWAY_URL": "http://127.0.0.1:9", "JOBWATCH_TEST_WATCHDOG_SECONDS": "0"}
    with WorkerProcess(tmp_path_factory.mktemp("detectors") / "worker.log", env=env, queues="celery") as process:
        yield process
    write_accuracy()


@pytest.fixture(autouse=True)
def thresholds():
    with override_settings(JOBWATCH={"RECORDER_FLUSH_INTERVAL": 0.1, "THRESHOLDS": THRESHOLDS}):
        yield
        settle()


def settle():
    """Let this test's jobs finish and their events land before the tables are emptied, so that
    nothing written late shows up in the next scenario."""
    signals.get_writer().flush()
    unfinished = JobExecution.objects.filter(state__in=("enqueued", "received", "started", "retried", "waiting")).exclude(queue="invoices")
    wait_for(lambda: not unfinished.exists(), timeout=60, what="the scenario's jobs to finish")
    time.sleep(0.5)  # the pool processes' last flush
    signals.get_writer().flush()


def finished(count, **filters):
    """Wait until `count` jobs matching filters finished and their enqueue was recorded."""
    return wait_for(
        lambda: JobExecution.objects.filter(state__in=("succeeded", "failed"), **filters).exclude(origin_kind="").count() >= count,
        timeout=120, what=f"{count} jobs {filters} to finish",
    )


def open_findings():
    # What this process recorded (a transaction's commit, say) is written first: with the commit
    # grace at 0 here, the recorder's second of lag would otherwise read as "never committed".
    signals.get_writer().flush()
    run_detectors(now=timezone.now())
    return {(f.kind, f.subject): f for f in Finding.objects.filter(status="open")}


def check(expected):
    """Exactly the expected findings are open; tally them for precision and recall."""
    found = open_findings()
    for key in set(found) | set(expected):
        tally = TALLY[DETECTOR_OF[key[0]]]
        if key in found and key in expected:
            tally["true_positives"] += 1
        elif key in found:
            tally["false_positives"] += 1
        else:
            tally["false_negatives"] += 1
    assert sorted(found) == sorted(expected), {key: found[key].title for key in found}
    return found


def one_incident():
    """The open findings are evidence of one problem: the alert task opens one incident."""
    run_alerts()
    [incident] = Incident.objects.filter(state__in=Incident.ACTIVE)
    return incident


def write_accuracy():
    report = {}
    for detector, tally in sorted(TALLY.items()):
        tp, fp, fn = tally["true_positives"], tally["false_positives"], tally["false_negatives"]
        report[detector] = {**tally, "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}
    folder = REPO / "test-artifacts"
    folder.mkdir(exist_ok=True)
    (folder / "detector-accuracy.json").write_text(json.dumps(report, indent=2))


def test_a_healthy_workload_of_thousands_of_jobs_opens_no_finding():
    # Sign-ups at a steady 10 a second (30 jobs a second): a busy shop, not a burst of saves.
    customers = []
    for n in range(300):
        customers.append(Customer.objects.create(name=f"c{n}", email=f"c{n}@example.com"))
        time.sleep(0.1)
    for customer in customers[:200]:
        Order.objects.create(customer=customer, total_cents=100)  # outside a transaction: nothing to roll back
        time.sleep(0.05)
    for n in range(300):
        tasks.echo.delay(n)
    finished(300 * 3 + 200 * 2 + 300)
    assert check({}) == {}


def plant_baseline(model, receiver, per_minute, minutes):
    """History before the window: the receiver's usual pace (recorded rows, as the recorder writes them)."""
    start = timezone.now() - timedelta(seconds=THRESHOLDS["FANOUT_WINDOW_SECONDS"] + minutes * 60)
    rows = [
        JobExecution(task_id=f"baseline-{receiver}-{n}", task_name="demo.tasks.sync_customer_to_crm", state="succeeded",
                     origin_kind="save", origin_model=model, origin_receiver=receiver,
                     enqueued_at=start + timedelta(seconds=n * 60 / per_minute), updated_at=start)
        for n in range(int(per_minute * minutes))
    ]
    JobExecution.objects.bulk_create(rows)


def test_it_finds_a_storm_of_trivial_saves_with_the_receivers_and_fields():
    for receiver in ("sync_customer_to_crm", "refresh_customer_segments", "reindex_customer"):
        plant_baseline("demo.Customer", f"demo.receivers.{receiver}", per_minute=2, minutes=10)
    start = timezone.now()
    customers = [Customer.objects.create(name=f"v{n}", email=f"v{n}@example.com") for n in range(5)]
    for _ in range(12):  # 60 visits: 180 enqueues in well under a minute
        for customer in customers:
            customer.last_seen_at = timezone.now()
            customer.save(update_fields=["last_seen_at"])
    finished(15 + 180, origin_model="demo.Customer", enqueued_at__gte=start)

    found = check({
        # Each visit re-enqueues the same three jobs for the same customer: duplicates too.
        **{("duplicate_enqueues", f"demo.tasks.{t}"): None for t in ("sync_customer_to_crm", "refresh_customer_segments", "index_customer")},
        # One storm: the saves of one model, whatever number of receivers carry it.
        ("fanout_storm", "demo.Customer"): None,
        ("trivial_save_enqueues", "demo.Customer"): None,
    })
    storm = found[("fanout_storm", "demo.Customer")]
    assert storm.evidence["enqueues"] == 195 and storm.evidence["saves"] == 65 and len(storm.evidence["receivers"]) == 3
    assert 4.5 <= storm.evidence["baseline_per_minute"] <= 6.0  # the window slid a little since planting
    incident = one_incident()
    assert incident.kind == "fanout_storm" and incident.findings.count() == 5
    trivial = found[("trivial_save_enqueues", "demo.Customer")]
    assert trivial.evidence["jobs"] == 180 and trivial.evidence["fields"] == ["last_seen_at"]
    assert trivial.evidence["receivers"]["demo.receivers.reindex_customer"] == 60 and len(trivial.evidence["receivers"]) == 3
    assert trivial.evidence["share_of_save_jobs"] == round(180 / 195, 3)


def test_it_finds_a_burst_of_saves_on_a_fresh_install_with_no_baseline():
    """1,200 enqueues from three receivers in a few seconds: a storm, whatever the window's average."""
    start = timezone.now()
    for n in range(400):
        Customer.objects.create(name=f"s{n}", email=f"s{n}@example.com")
    # A burst: 1,200 enqueues in under 20 s is at least 60 a second, above the burst rule's 50 in
    # any 10-second stretch, even on a machine busy enough to slow the saves down.
    assert timezone.now() - start < timedelta(seconds=20)
    finished(1200, origin_model="demo.Customer")

    found = check({("fanout_storm", "demo.Customer"): None})
    storm = found[("fanout_storm", "demo.Customer")]
    assert storm.evidence["peak_per_second"] >= 50 and storm.evidence["baseline_per_minute"] == 0
    assert sorted(storm.evidence["receivers"]) == [f"demo.receivers.{r}" for r in ("refresh_customer_segments", "reindex_customer", "sync_customer_to_crm")]
    assert storm.severity == "warning" and one_incident().subject == "demo.Customer"


def test_it_finds_duplicate_enqueues_and_counts_the_needless_ones():
    for _ in range(5):
        tasks.echo.delay("same", copies=True)
    tasks.echo.delay("different")
    finished(6, task_name="demo.tasks.echo")

    found = check({("duplicate_enqueues", "demo.tasks.echo"): None})
    evidence = found[("duplicate_enqueues", "demo.tasks.echo")].evidence
    assert (evidence["distinct_calls"], evidence["enqueues"], evidence["needless_enqueues"], evidence["ran_needlessly"]) == (1, 5, 4, 4)
    assert evidence["example_args"] == ["same"]


def test_it_finds_a_bulk_loop_and_the_receivers_that_enqueue_inside_it(worker):
    with worker.paused(), transaction.atomic():  # no job runs before the commit in this scenario
        for n in range(25):
            Customer.objects.create(name=f"b{n}", email=f"b{n}@example.com")
    finished(75, origin_model="demo.Customer")

    found = check({
        ("bulk_loop", "demo.Customer:unknown caller"): None,
        ("enqueue_in_transaction", "demo.receivers.sync_customer_to_crm:demo.tasks.sync_customer_to_crm"): None,
        ("enqueue_in_transaction", "demo.receivers.refresh_customer_segments:demo.tasks.refresh_customer_segments"): None,
    })
    loop = found[("bulk_loop", "demo.Customer:unknown caller")].evidence
    assert (loop["largest_saves"], loop["largest_jobs"], loop["jobs_per_save"]) == (25, 75, 3.0)


def test_it_finds_jobs_orphaned_by_a_rollback():
    customer = Customer.objects.create(name="r", email="r@example.com")
    rolled_back = []
    for _ in range(6):
        with pytest.raises(RuntimeError), transaction.atomic():
            rolled_back.append(Order.objects.create(customer=customer, total_cents=5).pk)
            raise RuntimeError("card declined")
    finished(6, task_name="demo.tasks.reserve_inventory")

    found = check({
        ("orphaned_jobs", "demo.tasks.reserve_inventory:rolled_back"): None,
        ("enqueue_in_transaction", "demo.receivers.reserve_inventory:demo.tasks.reserve_inventory"): None,
    })
    orphans = found[("orphaned_jobs", "demo.tasks.reserve_inventory:rolled_back")]
    assert orphans.count == 6 and sorted(orphans.evidence["missing_records"]["demo.Order"]) == sorted(rolled_back)
    assert sum(len(ids) for ids in orphans.evidence["job_ids"].values()) == 6  # by where they are
    assert one_incident().finding_id == orphans.pk


def test_it_finds_jobs_that_ran_before_their_transaction_committed():
    customer = Customer.objects.create(name="f", email="f@example.com")
    for attempt in range(5):
        with transaction.atomic():
            Order.objects.create(customer=customer, total_cents=5)
            # The worker takes reserve_inventory while this transaction is still open.
            wait_for(
                lambda attempt=attempt: JobExecution.objects.filter(task_name="demo.tasks.reserve_inventory", state="failed").count() > attempt,
                timeout=30, what="the job to run before the commit",
            )
    finished(5, task_name="demo.tasks.reserve_inventory")

    found = check({
        ("orphaned_jobs", "demo.tasks.reserve_inventory:ran_before_commit"): None,
        ("enqueue_in_transaction", "demo.receivers.reserve_inventory:demo.tasks.reserve_inventory"): None,
    })
    early = found[("orphaned_jobs", "demo.tasks.reserve_inventory:ran_before_commit")]
    assert early.count == 5 and early.evidence["commit_after_start_seconds_max"] > 0


@pytest.fixture
def invoices_queue():
    """A queue no worker consumes; emptied afterwards so its messages do not leak into other tests."""
    yield "invoices"
    redis.Redis(db=14).delete("invoices")


def test_it_finds_queued_jobs_whose_record_was_deleted_and_a_queue_nobody_consumes(invoices_queue):
    customer = Customer.objects.create(name="d", email="d@example.com")
    orders = [Order.objects.create(customer=customer, total_cents=5) for _ in range(4)]
    finished(8, task_name__in=("demo.tasks.reserve_inventory", "demo.tasks.send_order_confirmation"))
    for order in orders:  # the invoices wait in a queue no worker consumes…
        tasks.send_order_confirmation.apply_async((order.pk,), queue=invoices_queue)
    Order.objects.filter(pk__in=[order.pk for order in orders[:3]]).delete()  # …and three orders go away
    wait_for(lambda: JobExecution.objects.filter(queue=invoices_queue).count() == 4, what="the enqueues recorded")
    sample_queues()

    found = check({
        ("orphaned_jobs", "demo.tasks.send_order_confirmation:deleted_after_enqueue"): None,
        ("queue_without_consumer", "invoices"): None,
    })
    orphans = found[("orphaned_jobs", "demo.tasks.send_order_confirmation:deleted_after_enqueue")]
    assert orphans.count == 3 and sum(orphans.evidence["where"].values()) == 3
    assert sorted(orphans.evidence["missing_records"]["demo.Order"]) == sorted(order.pk for order in orders[:3])


def test_it_finds_a_long_old_queue_from_its_samples():
    now = timezone.now()
    for seconds in range(0, 25 * 60, 15):
        QueueSample.objects.create(queue="reports", sampled_at=now - timedelta(seconds=seconds), depth=150 + seconds // 60,
                                   consumers=1, oldest_age=400.0, arrivals_per_minute=10, drains_per_minute=10)

    found = check({("queue_too_long", "reports"): None, ("queue_oldest_age", "reports"): None})
    assert found[("queue_oldest_age", "reports")].severity == "critical"


def test_it_finds_a_task_that_fails_too_often_calling_a_service_with_no_breaker():
    customer = Customer.objects.create(name="p", email="p@example.com")
    for _ in range(25):
        order = Order.objects.create(customer=customer, total_cents=5)
        tasks.notify_warehouse.delay(order.pk)  # the warehouse (at the gateway's address) is down in this test
    finished(25, task_name="demo.tasks.notify_warehouse")

    warehouse = ("service_failing", "127.0.0.1:9")  # read from the refused connection's frames
    found = check({("failure_rate", "demo.tasks.notify_warehouse"): None, warehouse: None})
    assert found[("failure_rate", "demo.tasks.notify_warehouse")].evidence["errors"] == {"demo.gateway_client.GatewayError": 25}
    assert found[warehouse].evidence["tasks"] == {"demo.tasks.notify_warehouse": 25}
    assert found[warehouse].evidence["kind"] == "connection"


def test_jobs_behind_a_circuit_breaker_are_not_reported_as_missing_one():
    """Charges go through the payment-gateway breaker: with the gateway down they open the
    circuit (a circuit_open finding with the jobs waiting), never service_failing."""
    customer = Customer.objects.create(name="c", email="c@example.com")
    order = Order.objects.create(customer=customer, total_cents=5)
    for _ in range(12):
        Payment.objects.create(order=order, amount_cents=5)
    wait_for(lambda: JobExecution.objects.filter(task_name="demo.tasks.charge_payment", state="waiting").count() >= 6,
             timeout=60, what="charges waiting on the open circuit")

    found = check({("circuit_open", "payment-gateway"): None})
    assert found[("circuit_open", "payment-gateway")].evidence["jobs_waiting"] >= 6
    # Let the waiting charges go (they would outlive this test): the gateway stays down, so
    # close the circuit's story by deleting the payments and resetting it.
    Payment.objects.all().delete()
    from monitors.circuits import shared_store
    from monitors.circuits.machine import Policy, force

    shared_store().update("payment-gateway", Policy(), lambda state: (None, force(state, Policy(), timezone.now(), "closed", "test")))


def test_running_the_detectors_twice_on_the_same_data_changes_nothing():
    for _ in range(4):
        tasks.echo.delay("twice")
    finished(4, task_name="demo.tasks.echo")
    now = timezone.now()
    run_detectors(now=now)
    before = list(Finding.objects.order_by("id").values())
    outcomes = run_detectors(now=now)
    assert list(Finding.objects.order_by("id").values()) == before
    assert all(not (o.opened or o.updated or o.resolved) for o in outcomes.values())
    # A later run, with the jobs gone from the window, resolves the finding.
    run_detectors(now=now + timedelta(hours=2))
    assert not Finding.objects.filter(status="open").exists()

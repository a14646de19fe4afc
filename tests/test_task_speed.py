"""Each task's speed, measured by real workers on Redis and RabbitMQ: runtime of finished jobs and
queue wait of every delivery (from the publish, or from the eta of a job told to wait), kept in
the per-minute and hourly histograms, shown on the Tasks page, a task's page and its JSON, and
exported as celery-exporter's celery_task_queue_wait_time."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitors.conf import DEFAULTS
from monitors.models import JobExecution, JobHistogram
from tests.brokers import broker_url_of, celery_app, scratch_queue, staff_with
from tests.workers import WorkerProcess, database_url_for_workers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WAITED = 2.5  # seconds the first jobs sit in their queue before a worker starts


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request):
    return broker_url_of(request.param, 13)


@pytest.fixture
def queue(broker_url):
    with scratch_queue(broker_url, "speed-test") as name:
        yield name


def succeeded(ids):
    return JobExecution.objects.filter(task_id__in=ids, state="succeeded").count() == len(ids)


def histogram(task, measure, resolution=60):
    rows = JobHistogram.objects.filter(task_name=task, measure=measure, resolution=resolution)
    return {row.upper_ms: row.count for row in rows} if rows else {}


def total(counts):
    return sum(counts.values())


def what_was_written(worker):
    """On a timeout: the histograms and recorder processes as written, and the worker's last words."""
    from monitors.models import RecorderProcess

    rows = list(JobHistogram.objects.filter(resolution=60).values_list("task_name", "measure", "outcome", "count"))
    processes = list(RecorderProcess.objects.values_list("pid", "events_recorded", "events_dropped_error", "last_error"))
    return f"histograms {rows}; recorder processes {processes}; worker log: {worker.log()[-3000:]}"


def test_runtime_and_queue_wait_of_each_task_from_real_workers(tmp_path, broker_url, queue, client, settings):
    app = celery_app(broker_url)
    sleepy = [app.send_task("demo.tasks.sleep_for", args=[0.3], queue=queue).id for _ in range(3)]
    sleepy.append(app.send_task("demo.tasks.sleep_for", args=[1.2], queue=queue).id)
    # One failure with a retry: two deliveries (two waits), one finished run.
    flaky = app.send_task("demo.tasks.flaky", args=[1], queue=queue).id
    time.sleep(WAITED)
    env = {"DATABASE_URL": database_url_for_workers(), "CELERY_BROKER_URL": broker_url}
    with WorkerProcess(tmp_path / "worker.log", env=env, queues=f"{queue},celery") as worker:
        wait_for(lambda: succeeded(sleepy + [flaky]), timeout=40, what="the queued jobs to run")
        # Told to wait 3 s: its wait counts from its eta, not from its publish.
        later = app.send_task("demo.tasks.echo", args=[1], queue=queue, countdown=3).id
        wait_for(lambda: succeeded([later]), timeout=30, what="the job with an eta")
    # Each pool process writes its own histograms, on its own flush: wait for every job's.
    wait_for(lambda: total(histogram("demo.tasks.echo", "wait")) == 1 and total(histogram("demo.tasks.sleep_for", "wait")) == 4
             and total(histogram("demo.tasks.sleep_for", "runtime")) == 4, what="the histograms to be written",
             explain=lambda: what_was_written(worker))

    runtime, wait = histogram("demo.tasks.sleep_for", "runtime"), histogram("demo.tasks.sleep_for", "wait")
    assert total(runtime) == 4 and total(wait) == 4
    assert total(histogram("demo.tasks.sleep_for", "runtime", resolution=3600)) == 4  # the hourly rows too
    assert sum(count for upper, count in runtime.items() if 300 <= upper <= 500) == 3  # 0.3 s
    assert sum(count for upper, count in runtime.items() if 1200 <= upper <= 1500) == 1  # 1.2 s
    assert min(wait) >= WAITED * 1000  # every one waited at least until the worker started
    assert total(histogram("demo.tasks.flaky", "wait")) == 2 and total(histogram("demo.tasks.flaky", "runtime")) == 1
    [echo_wait] = histogram("demo.tasks.echo", "wait")
    assert echo_wait <= 1000, "the eta's 3 s are not queue wait"

    user = staff_with()
    client.force_login(user)
    speed = client.get("/jobwatch/api/task/?name=demo.tasks.sleep_for&window=15m").json()
    assert speed["runtime"]["count"] == 4 and speed["wait"]["count"] == 4
    assert 0.3 <= speed["runtime"]["p50"] <= 0.5 and 1.0 <= speed["runtime"]["p99"] <= 1.5
    assert (0.3 * 3 + 1.2) / 4 <= speed["runtime"]["mean"] <= (0.3 * 3 + 1.2) / 4 + 0.1  # from the exact sums
    assert speed["wait"]["p50"] >= WAITED
    assert {row["label"] for row in speed["histogram"] if row["runtime"]} == {"≤ 500 ms", "≤ 1.5 s"}
    assert sum(1 for value in speed["series"]["runtime"]["0.95"] if value) >= 1
    assert {job["task_id"] for job in speed["slowest"]} == set(sleepy)
    assert speed["slowest"][0]["runtime"] >= 1.2

    page = client.get("/jobwatch/task/?name=demo.tasks.sleep_for&window=1h")
    assert page.status_code == 200 and b"Queue wait" in page.content and b"histogram-chart" in page.content
    listing = client.get("/jobwatch/api/tasks/?window=15m&sort=p95").json()["tasks"]
    names = [row["name"] for row in listing]
    assert names.index("demo.tasks.sleep_for") < names.index("demo.tasks.echo")  # slowest first
    overview = client.get("/jobwatch/api/?window=15m").json()
    assert overview["slowest_tasks"][0]["name"] == "demo.tasks.sleep_for"

    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": "t"}
    samples = wait_samples(client, "demo.tasks.sleep_for")
    assert {sample.labels["queue_name"] for sample in samples} == {queue}
    assert all(sample.labels["hostname"].startswith("test@") for sample in samples)
    assert sum(sample.value for sample in samples if sample.name.endswith("_count")) == 4
    assert sum(sample.value for sample in samples if sample.name.endswith("_sum")) >= 4 * WAITED
    buckets = [(sample.labels["le"], sample.value) for sample in samples if sample.name.endswith("_bucket")]
    # celery-exporter's default bounds (Prometheus's), cumulative, +Inf last and counting all.
    assert [le for le, _ in buckets] == [repr(bound) for bound in DEFAULTS["METRICS_QUEUE_WAIT_BUCKETS"]] + ["+Inf"]
    assert [value for _, value in buckets] == sorted(value for _, value in buckets) and buckets[-1][1] == 4
    assert dict(buckets)["1.0"] == 0 and dict(buckets)["10.0"] == 4  # each waited 2.5 s or more

    # Other bounds: the histogram starts again from zero, rather than mixing two sets of bounds.
    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_QUEUE_WAIT_BUCKETS": [1, 2, 30]}
    assert wait_samples(client, "demo.tasks.sleep_for") == []


def wait_samples(client, task):
    text = client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return [sample for sample in families["celery_task_queue_wait_time"].samples if sample.labels["name"] == task]

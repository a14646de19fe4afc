"""Every dashboard page on real PostgreSQL: who may see it, the whole page, the fragment an htmx
poll asks for, the same data as JSON under /api/, and what each page computes (filters, keyset
pages, counts that say what they are, failure groups, fan-out, orphans, circuits, workers)."""

import json
from datetime import timedelta
from pathlib import Path

import django
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

import monitors
from monitors.models import (Circuit, CircuitEvent, Finding, JobExecution, JobTally, MonitorHeartbeat, OriginTally,
                             QueueSample, RecorderProcess)
from monitors.recording.origin_tally import count_history
from tests.rows import job_row

pytestmark = [pytest.mark.django_db]

PAGES = ["/jobwatch/", "/jobwatch/queues/", "/jobwatch/queues/mail/", "/jobwatch/jobs/", "/jobwatch/jobs/job-1/",
         "/jobwatch/failures/", "/jobwatch/fanout/", "/jobwatch/orphans/", "/jobwatch/circuits/", "/jobwatch/workers/",
         "/jobwatch/findings/", "/jobwatch/alerts/", "/jobwatch/archive/", "/jobwatch/actions/"]
# The fragment each page's htmx poll swaps (the element's id, sent as HX-Target).
FRAGMENTS = {"/jobwatch/": "overview-health", "/jobwatch/queues/": "queue-table", "/jobwatch/queues/mail/": "queue-facts",
             "/jobwatch/jobs/": "job-rows", "/jobwatch/jobs/job-1/": "job-state", "/jobwatch/failures/": "failure-groups",
             "/jobwatch/fanout/": "fanout-tables", "/jobwatch/orphans/": "orphan-list", "/jobwatch/circuits/": "circuit-tiles",
             "/jobwatch/workers/": "worker-table", "/jobwatch/findings/": "finding-rows", "/jobwatch/alerts/": "alert-list",
             "/jobwatch/archive/": "archive-rows", "/jobwatch/actions/": "audit-rows"}


def now():
    return timezone.now()


def job(task_id, **fields):
    return job_row(task_id, **{"task_name": "shop.send_receipt", "queue": "mail", **fields})


@pytest.fixture
def staff():
    client = Client()
    client.force_login(User.objects.create_user("oncall", is_staff=True))
    return client


@pytest.fixture
def shop():
    """A little of everything each page shows."""
    job("job-1", state="failed", exception_type="ConnectionError", exception_message="gateway down <b>bold</b>",
        origin_kind="save", origin_model="shop.Order", origin_pk="7", origin_receiver="shop.receivers.order_saved",
        origin_save="save-1", origin_update_fields=["last_seen_at"])
    for n in range(2, 5):
        job(f"job-{n}", origin_kind="save", origin_model="shop.Order", origin_pk="7",
            origin_receiver="shop.receivers.order_saved", origin_save="save-1", origin_update_fields=["last_seen_at"])
    job("child-1", parent_id="job-1", task_name="shop.notify")
    job("replay-1", replay_of="job-1", state="enqueued")
    moment = now()
    QueueSample.objects.create(queue="mail", sampled_at=moment - timedelta(seconds=15), depth=3, in_flight=1, consumers=1,
                               oldest_age=4.0, arrivals_per_minute=10, drains_per_minute=12)
    QueueSample.objects.create(queue="mail", sampled_at=moment, depth=5, in_flight=2, consumers=0, oldest_age=9.0,
                               arrivals_per_minute=20, drains_per_minute=0)
    minute = moment.replace(second=0, microsecond=0)
    JobTally.objects.create(minute=minute, metric="failed", task_name="shop.send_receipt", exception="ConnectionError", count=4)
    JobTally.objects.create(minute=minute, metric="succeeded", task_name="shop.send_receipt", queue="mail", count=12, runtime_sum=3)
    JobTally.objects.create(minute=minute - timedelta(minutes=3), metric="failed", task_name="shop.charge",
                            exception="CardDeclined", count=1)
    finding = Finding.objects.create(fingerprint="orphans:shop.send_receipt:rolled_back", detector="orphans",
                                     kind="orphaned_jobs", subject="shop.send_receipt:rolled_back", severity="critical",
                                     title="2 orphaned shop.send_receipt jobs: rolled back", explanation="rolled back",
                                     evidence={"cause": "rolled_back", "jobs": 2, "where": {"queue mail": 1, "failed": 1},
                                               "missing_records": {"shop.Order": [7]}, "enqueued_by": {"shop.receivers.order_saved": 2},
                                               "job_ids": {"failed": ["job-1"], "queue mail": ["replay-1"]},
                                               "queued_job_ids": {"mail": ["replay-1"]}},
                                     count=2, first_seen=moment, last_seen=moment)
    Circuit.objects.create(name="payment-gateway", state="open", changed_at=moment - timedelta(seconds=10),
                           opened_at=moment - timedelta(seconds=10), consecutive_failures=5, open_count=1,
                           last_error_type="GatewayError", last_error="503 <i>from</i> gateway",
                           window=[[moment.timestamp() - 5, 10, 6]], policy={"reset_timeout": 30, "window": 60})
    CircuitEvent.objects.create(circuit="payment-gateway", at=moment - timedelta(seconds=10), from_state="closed",
                                to_state="open", cause="5 consecutive failures")
    job("waiting-1", task_name="shop.charge", state="waiting", circuit="payment-gateway", queue="payments")
    # The Fan-out page's counts, as the recorder would have kept them for these jobs.
    count_history(JobExecution, OriginTally, connection, moment - timedelta(hours=1), moment + timedelta(minutes=1))
    return finding


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_log_in_and_the_api_answers_401(client, shop, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    api = client.get(url.replace("/jobwatch/", "/jobwatch/api/", 1))
    assert api.status_code == 401 and "log in" in api.json()["error"]


@pytest.mark.parametrize("url", PAGES)
def test_non_staff_users_are_refused(shop, url):
    outsider = Client()
    outsider.force_login(User.objects.create_user("customer"))
    assert outsider.get(url).status_code == 403
    assert outsider.get(url.replace("/jobwatch/", "/jobwatch/api/", 1)).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_each_page_whole_as_a_fragment_and_as_json(staff, shop, url):
    page = staff.get(url)
    assert page.status_code == 200, page.content[:500]
    html = page.content.decode()
    assert html.startswith("<!doctype html>") and 'id="page"' in html
    if django.VERSION >= (6, 0):  # the site's policy needs Django's built-in CSP (dashboard/settings.py)
        assert "Content-Security-Policy" in page.headers and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in html  # no inline script: the policy forbids it, and it would be a hole
    fragment = staff.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=FRAGMENTS[url])
    assert fragment.status_code == 200
    part = fragment.content.decode()
    assert "<html" not in part and "<header>" not in part
    assert f'id="{FRAGMENTS[url]}"' in part
    api = staff.get(url.replace("/jobwatch/", "/jobwatch/api/", 1))
    assert api.status_code == 200 and api["Content-Type"] == "application/json"
    assert isinstance(api.json(), dict) and api.json()


def test_text_from_jobs_is_escaped_on_every_page(staff, shop):
    job("odd-1", task_name="<i>evil</i>.task_name", exception_type="x.<u>Error</u>", origin_receiver="<s>r</s>")
    listed = staff.get("/jobwatch/jobs/").content.decode()
    assert "<i>evil</i>" not in listed and "<u>" not in listed and "<s>r</s>" not in listed
    assert "&lt;i&gt;evil&lt;/i&gt;.<wbr>task_<wbr>name" in listed  # breakable at its dots, still escaped
    for url in ("/jobwatch/jobs/job-1/", "/jobwatch/failures/", "/jobwatch/circuits/", "/jobwatch/jobs/?state=failed"):
        html = staff.get(url).content.decode()
        assert "<b>bold</b>" not in html and "<i>from</i>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in staff.get("/jobwatch/jobs/job-1/").content.decode()


def test_jobs_filters_keyset_pages_and_counts(staff, monkeypatch):
    from monitors.web import counting

    # What is counted, not how fast: a cold test database plans slowly.
    monkeypatch.setattr(counting, "TIMEOUT_MS", 5000)
    monkeypatch.setattr(counting, "ANSWER_BUDGET_MS", 10_000)
    base = now() - timedelta(hours=1)
    for n in range(120):
        job(f"bulk-{n:03}", task_name="shop.sync" if n % 2 else "shop.other", state="failed" if n % 3 == 0 else "succeeded",
            at=base + timedelta(seconds=n), args=[f"customer-{n}"], worker="celery@a" if n < 60 else "celery@b")
    first = staff.get("/jobwatch/api/jobs/?task=shop.sync&count=1").json()
    ids = [row["task_id"] for row in first["jobs"]]
    assert len(ids) == 50 and all(row["task_name"] == "shop.sync" for row in first["jobs"])
    assert ids == sorted(ids, reverse=True)  # newest first
    assert first["count"] == {"value": 60, "kind": "exact", "label": "60"}
    second = staff.get(f"/jobwatch/api/jobs/?task=shop.sync&before={first['next_before']}").json()
    third = staff.get(f"/jobwatch/api/jobs/?task=shop.sync&before={second['next_before']}").json() if second["next_before"] else None
    assert third is None
    seen = ids + [row["task_id"] for row in second["jobs"]]
    assert len(seen) == len(set(seen)) == 60
    failed_sync = staff.get("/jobwatch/api/jobs/?task=shop.sync&state=failed").json()
    assert {row["task_id"] for row in failed_sync["jobs"]} == {f"bulk-{n:03}" for n in range(120) if n % 2 and n % 3 == 0}
    worker_b = staff.get("/jobwatch/api/jobs/?worker=celery@b&text=customer-11").json()
    assert [row["task_id"] for row in worker_b["jobs"]] == ["bulk-119", "bulk-118", "bulk-117", "bulk-116", "bulk-115",
                                                           "bulk-114", "bulk-113", "bulk-112", "bulk-111", "bulk-110"]
    window = staff.get("/jobwatch/api/jobs/", {"since": (base + timedelta(seconds=100)).isoformat()}).json()
    assert len(window["jobs"]) == 20
    bad = staff.get("/jobwatch/api/jobs/?state=exploded")
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "state" and "exploded" in bad.json()["error"]
    html = staff.get("/jobwatch/jobs/?since=yesterday-ish").content.decode()
    assert "neither an ISO time" in html  # a bad filter is an error that says why, not an empty page
    # The page itself shows the count in its own fragment (the list never waits for it).
    count = staff.get("/jobwatch/jobs/?task=shop.sync", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="job-count").content.decode()
    assert 'id="job-count"' in count and "60 matches" in count


def test_counts_beyond_the_cap_and_the_unfiltered_total_say_so(staff, monkeypatch):
    from django.db import connection

    from monitors.web import counting

    base = now()
    JobExecution.objects.bulk_create([JobExecution(task_id=f"many-{n}", task_name="shop.sync", state="succeeded",
                                                   enqueued_at=base, updated_at=base) for n in range(30)])
    capped = counting.bounded_count(JobExecution.objects.filter(task_name="shop.sync"), cap=25)
    assert (capped.value, capped.kind, capped.label) == (25, "at least", "25+")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitors_jobexecution")
    total = counting.bounded_count(JobExecution.objects.all(), filtered=False, cap=10)
    assert total.kind == "estimated" and total.label.startswith("≈")
    # Below the cap, even the whole table is counted exactly (an unanalysed table estimates 0).
    assert counting.bounded_count(JobExecution.objects.all(), filtered=False).kind == "exact"
    # An exact count that would take too long gives way to the planner's estimate.
    monkeypatch.setattr(counting, "ESTIMATE_TIMEOUT_MS", 5000)
    slow_filter = JobExecution.objects.extra(where=["pg_sleep(0.01) IS NOT NULL"])
    slow = counting.bounded_count(slow_filter, timeout_ms=20)
    assert slow.kind == "estimated"


def counts_tried(queryset, **options):
    """bounded_count's answer, and how many exact counts it started on the way."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from monitors.web import counting

    with CaptureQueriesContext(connection) as captured:
        answer = counting.bounded_count(queryset, **options)
    return answer, sum("COUNT(*)" in query["sql"] for query in captured.captured_queries)


def test_a_slow_count_is_only_waited_for_when_the_planner_expects_it_under_the_cap(monkeypatch):
    from django.db import connection

    from monitors.web import counting

    base = now()
    JobExecution.objects.bulk_create([JobExecution(task_id=f"slow-{n}", task_name="shop.sync", state="succeeded",
                                                   enqueued_at=base, updated_at=base) for n in range(40)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitors_jobexecution")
    monkeypatch.setattr(counting, "ESTIMATE_TIMEOUT_MS", 5000)
    slow = JobExecution.objects.extra(where=["pg_sleep(0.01) IS NOT NULL"])  # 10 ms a row: never done in time
    # Expected past the cap: an exact count could at best say "10+", so only its quick try is made.
    answer, tried = counts_tried(slow, cap=10, timeout_ms=60)
    assert (answer.kind, tried) == ("estimated", 1) and answer.value >= 10
    # Expected under it: counted on with the rest of the time, then the estimate.
    answer, tried = counts_tried(slow, cap=10_000, timeout_ms=60)
    assert (answer.kind, tried) == ("estimated", 2)
    # A quick count is exact at the first try, whatever the planner would say.
    answer, tried = counts_tried(JobExecution.objects.filter(task_name="shop.sync"), cap=10, timeout_ms=60)
    assert (answer.kind, answer.label, tried) == ("at least", "10+", 1)


def test_a_count_shares_the_answer_budget_with_the_list_it_comes_with(staff, monkeypatch):
    """Listed and counted in one answer (the JSON with ?count=1, the page without JavaScript), the
    count gets what the list left of ANSWER_BUDGET_MS; the page's own count fragment, which lists
    nothing, gets its full timeouts."""
    from monitors.web import counting

    base = now()
    JobExecution.objects.bulk_create([JobExecution(task_id=f"budget-{n}", task_name="shop.sync", state="failed",
                                                   enqueued_at=base, updated_at=base) for n in range(12)])
    assert counting.timeouts(20, 0) == (20, 15)  # nothing spent: the full timeouts
    assert counting.timeouts(20, counting.ANSWER_BUDGET_MS - 14) == (8, 6)  # shrunk alike
    assert counting.timeouts(20, counting.ANSWER_BUDGET_MS - 2) == (None, None)  # too little left to try
    monkeypatch.setattr(counting, "TIMEOUT_MS", 5000)
    monkeypatch.setattr(counting, "ANSWER_BUDGET_MS", 1)  # the list has spent it all
    listed = staff.get("/jobwatch/api/jobs/?task=shop.sync&count=1").json()
    assert len(listed["jobs"]) == 12 and listed["count"] == {"value": 0, "kind": "unknown", "label": "many"}
    alone = staff.get("/jobwatch/jobs/?task=shop.sync", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="job-count").content.decode()
    assert "12 matches" in alone


def test_failures_are_grouped_by_task_and_exception_with_replay_and_discard(staff, shop):
    data = staff.get("/jobwatch/api/failures/").json()
    groups = {(group["task_name"], group["exception"]): group for group in data["groups"]}
    assert groups[("shop.send_receipt", "ConnectionError")]["failures"] == 4
    assert groups[("shop.send_receipt", "ConnectionError")]["example"]["task_id"] == "job-1"
    assert groups[("shop.charge", "CardDeclined")]["failures"] == 1
    assert data["total"] == 5
    html = staff.get("/jobwatch/failures/").content.decode()
    # One form a group: its filter posted to replay, or by the second button's formaction to discard.
    assert 'action="/jobwatch/jobs/replay/"' in html and 'formaction="/jobwatch/jobs/discard/"' in html
    assert '<input type="hidden" name="exception" value="CardDeclined">' in html
    only = staff.get("/jobwatch/api/failures/?task=shop.charge").json()
    assert [group["task_name"] for group in only["groups"]] == ["shop.charge"]


def test_fanout_ranks_origins_and_saves_with_the_fields_they_touched(staff, shop):
    data = staff.get("/jobwatch/api/fanout/").json()
    origin = data["origins"][0]
    assert (origin["origin_model"], origin["origin_receiver"], origin["jobs"], origin["saves"], origin["per_save"]) == (
        "shop.Order", "shop.receivers.order_saved", 4, 1, 4.0)
    save = data["saves"][0]
    assert save["origin_save"] == "save-1" and save["jobs"] == 4 and save["origin_update_fields"] == ["last_seen_at"]
    assert "last_seen_at" in staff.get("/jobwatch/fanout/").content.decode()


def test_orphans_offer_forced_replay_and_purge_of_the_queued_ones(staff, shop):
    data = staff.get("/jobwatch/api/orphans/").json()
    assert [finding["subject"] for finding in data["orphans"]] == ["shop.send_receipt:rolled_back"]
    html = staff.get("/jobwatch/orphans/").content.decode()
    assert f'name="finding" value="{shop.pk}"' in html and 'name="force" value="1"' in html
    assert 'action="/jobwatch/queues/mail/purge/"' in html and 'value="id:replay-1"' in html  # the queued one only
    assert 'value="id:job-1"' not in html


def test_circuit_tiles_show_state_error_rate_cool_down_and_waiting_jobs(staff, shop):
    tile = staff.get("/jobwatch/api/circuits/").json()["tiles"][0]
    assert tile["name"] == "payment-gateway" and tile["state"] == "open"
    assert (tile["calls"], tile["failures"], tile["error_rate"]) == (10, 6, 60.0)
    assert 15 < tile["cool_down_left"] <= 20
    assert tile["waiting"]["count"] == 1 and tile["waiting"]["queues"] == {"payments": 1}
    html = staff.get("/jobwatch/circuits/").content.decode()
    assert 'action="/jobwatch/circuits/payment-gateway/force/"' in html and "Force closed" in html


def test_workers_alive_stopped_and_vanished_with_jobs_in_flight(staff):
    moment = now()

    def process(node, pid, last, stopped=None):
        RecorderProcess.objects.create(hostname="host", pid=pid, process_started_at=moment - timedelta(hours=1), node=node,
                                       queues=["celery", "mail"], last_flush_at=last, stopped_at=stopped)

    process("celery@alive", 1, moment)
    process("celery@gone", 2, moment - timedelta(minutes=10))
    process("celery@done", 3, moment - timedelta(minutes=10), stopped=moment - timedelta(minutes=10))
    job("stuck-1", state="started", worker="celery@gone", started_at=moment - timedelta(minutes=12))
    job("busy-1", state="started", worker="celery@alive", started_at=moment)
    workers = {worker["node"]: worker for worker in staff.get("/jobwatch/api/workers/").json()["workers"]}
    assert workers["celery@alive"]["status"] == "alive" and workers["celery@alive"]["queues"] == ["celery", "mail"]
    assert [job["task_id"] for job in workers["celery@alive"]["running"]] == ["busy-1"]
    assert workers["celery@gone"]["status"] == "vanished" and workers["celery@gone"]["running_count"] == 1
    assert workers["celery@done"]["status"] == "stopped"
    assert "vanished with 1 job in flight" in staff.get("/jobwatch/workers/").content.decode()


def test_a_busy_worker_lists_its_oldest_jobs_in_flight_and_counts_them_all(staff, monkeypatch):
    from monitors.web import workers as workers_page

    monkeypatch.setattr(workers_page, "RUNNING_SHOWN", 3)
    moment = now()
    for number in range(5):
        job(f"busy-{number}", state="started", worker="celery@busy", started_at=moment - timedelta(seconds=number))
    job("calm-1", state="started", worker="celery@calm", started_at=moment)
    job("done-1", state="succeeded", worker="celery@calm", started_at=moment)
    workers = {worker["node"]: worker for worker in staff.get("/jobwatch/api/workers/").json()["workers"]}
    assert [job["task_id"] for job in workers["celery@busy"]["running"]] == ["busy-4", "busy-3", "busy-2"]
    assert workers["celery@busy"]["running_count"] == 5
    assert [job["task_id"] for job in workers["celery@calm"]["running"]] == ["calm-1"]
    assert workers["celery@calm"]["running_count"] == 1


def test_overview_shows_trouble_and_a_stale_monitor_is_a_banner_on_every_page(staff, shop):
    data = staff.get("/jobwatch/api/").json()
    assert dict(data["findings_by_severity"])["critical"] == 1
    assert [row["name"] for row in data["queues_in_trouble"]] == ["mail"]  # 5 waiting, no consumer
    assert data["open_circuits"][0]["name"] == "payment-gateway"
    assert sum(data["series"]["failed"]) == 5 and sum(data["series"]["succeeded"]) == 12
    assert data["failure_rate_now"] == round(100 * 5 / 17, 1)
    # Nothing ever ran: the banner says beat is not running, on any page.
    assert "The periodic monitor is not running" in staff.get("/jobwatch/jobs/").content.decode()
    for task in ("jobwatch.sample_queues", "jobwatch.run_detectors", "jobwatch.send_alerts"):
        MonitorHeartbeat.objects.create(task=task, last_run_at=now(), first_run_at=now())
    assert "The periodic monitor is not running" not in staff.get("/jobwatch/jobs/").content.decode()


def test_charts_are_embedded_as_data_not_script(staff, shop):
    html = staff.get("/jobwatch/").content.decode()
    start = html.index('<script id="throughput-chart" type="application/json">') + len('<script id="throughput-chart" type="application/json">')
    figure = json.loads(html[start: html.index("</script>", start)])
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["succeeded", "failed"] and max(figure["data"][0]["y"]) == 12.0
    assert 'src="/static/jobwatch/vendor/htmx-2.0.11.min.js"' in html and "plotly-basic-3.7.0.min.js" in html


def test_chart_times_are_the_sites_wall_clock_across_a_daylight_saving_change():
    """plotly.js draws a date axis's milliseconds as UTC: each point is sent as the site's wall
    time at that moment, so the hour after the clocks went back reads one hour less."""
    from datetime import UTC, datetime

    from monitors.web.charts import line_chart, wall_time_converter

    paris = timezone.override("Europe/Paris")
    with paris:
        convert = wall_time_converter()
        before = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 summer time (UTC+2)
        after = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 winter time (UTC+1)
        assert convert(before) == convert(after) == int(datetime(2026, 10, 25, 2, 30, tzinfo=UTC).timestamp() * 1000)
        figure = line_chart([("jobs", [before, after], [1, 2])])
    assert figure["data"][0]["x"] == [convert(before), convert(after)]
    assert figure["layout"]["xaxis"]["type"] == "date"
    with timezone.override("UTC"):
        assert wall_time_converter()(after) == int(after.timestamp() * 1000)


ODD_TASK_IDS = ["imports/2026-12-02/batch 7", "a/../../admin", "a?b#c&d=e", "100% done", "naïve ünïcode", "it's", "-"]


@pytest.mark.parametrize("task_id", ODD_TASK_IDS)
def test_a_job_link_is_what_reverse_writes_but_keeps_a_slash_inside_the_id(task_id):
    """reverse() would leave a "/" of the id as it is, and a browser walks "a/../.." out of the
    jobs pages: in the link the id is one path segment."""
    from django.urls import reverse

    from monitors.templatetags.jobwatch import job_url

    jobs = reverse("monitors:jobs")
    by_reverse = reverse("monitors:job", args=[task_id]).removeprefix(jobs).removesuffix("/")
    assert job_url(task_id) == jobs + by_reverse.replace("/", "%2F") + "/"


def test_jobs_whose_ids_hold_slashes_and_query_characters_are_listed_and_open(staff):
    """A task id is the sender's (apply_async(task_id=…)): one holding a "/" or "?" neither breaks
    the list for everyone nor leads to another page."""
    for task_id in ODD_TASK_IDS:
        job_row(task_id, "shop.import", "default").save()
    listing = staff.get("/jobwatch/jobs/")
    assert listing.status_code == 200
    html = listing.content.decode()
    for task_id in ODD_TASK_IDS:
        from monitors.templatetags.jobwatch import job_url

        link = job_url(task_id)
        assert f'href="{escape(link)}"' in html
        page = staff.get(link)
        assert page.status_code == 200, (task_id, link)
        assert escape(task_id) in page.content.decode()
        assert staff.get("/jobwatch/api" + link.removeprefix("/jobwatch")).json()["job"]["task_id"] == task_id


def test_job_page_shows_the_chain_and_the_same_save(staff, shop):
    data = staff.get("/jobwatch/api/jobs/job-1/").json()
    assert [child["task_id"] for child in data["children"]] == ["child-1"]
    assert [replay["task_id"] for replay in data["replays"]] == ["replay-1"]
    assert sorted(other["task_id"] for other in data["same_save"]) == ["job-2", "job-3", "job-4"]
    assert [event["what"] for event in data["timeline"]][0].startswith("enqueued")
    assert staff.get("/jobwatch/jobs/no-such-job/").status_code == 404


def test_findings_list_filters_and_detail(staff, shop):
    assert [f["pk"] if "pk" in f else f["id"] for f in staff.get("/jobwatch/api/findings/").json()["findings"]] == [shop.pk]
    assert staff.get("/jobwatch/api/findings/?status=resolved").json()["findings"] == []
    detail = staff.get(f"/jobwatch/api/findings/{shop.pk}/").json()
    assert detail["job_ids_total"] == 2 and {job["task_id"] for job in detail["jobs"]} == {"job-1", "replay-1"}


@pytest.mark.django_db(databases=["default", "embedded"])
@pytest.mark.parametrize("key", ["15m", "1h", "6h", "24h", "7d"])
def test_chart_buckets_add_up_to_the_tallies_on_postgresql_and_sqlite(key):
    """The database puts each minute in its bucket (windows.Bucket, SQL per vendor): every
    minute's count lands in exactly one point, on both databases the dashboard runs on."""
    from django.db.models import Sum

    from monitors.web.windows import WINDOWS, bucket_times, tally_series

    window = WINDOWS[key]
    start = bucket_times(window)[0]
    moments = [start + timedelta(minutes=n) for n in range(0, int(window.span.total_seconds() // 60), 7)]
    for database in ("default", "embedded"):
        JobTally.objects.using(database).bulk_create(
            [JobTally(minute=moment, metric="failed", task_name="t", count=n + 1) for n, moment in enumerate(moments)])
        times, series = tally_series(window, ["failed"], using=database)
        expected = JobTally.objects.using(database).filter(minute__gte=times[0]).aggregate(n=Sum("count"))["n"]
        assert sum(series[("failed", "")]) == expected == sum(range(1, len(moments) + 1)), database
        first = sum(n + 1 for n, moment in enumerate(moments) if moment < start + timedelta(seconds=window.bucket))
        assert series[("failed", "")][0] == first  # the window's first minutes, in the first point


def test_a_poll_after_the_session_expired_sends_the_whole_page_to_log_in(client, shop):
    response = client.get("/jobwatch/queues/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="queue-table",
                          HTTP_HX_CURRENT_URL="http://testserver/jobwatch/queues/")
    assert response.status_code == 200 and "/login/" in response["HX-Redirect"]
    assert response.content == b""  # nothing for htmx to swap into the fragment


def test_message_bodies_stay_out_of_the_archive_json(staff):
    from monitors.models import ArchivedMessage

    ArchivedMessage.objects.create(archived_at=now(), broker="redis", queue="mail", task_id="t-1", task_name="shop.mail",
                                   raw='{"password": "hunter2"}', size=23)
    rows = staff.get("/jobwatch/api/archive/").json()["rows"]
    assert rows[0]["task_id"] == "t-1" and "raw" not in rows[0]
    assert "hunter2" not in staff.get("/jobwatch/archive/").content.decode()


def test_a_failure_group_without_an_exception_offers_no_bulk_action(staff):
    JobTally.objects.create(minute=now().replace(second=0, microsecond=0), metric="failed", task_name="shop.quiet", count=3)
    group = staff.get("/jobwatch/api/failures/").json()["groups"][0]
    assert group["task_name"] == "shop.quiet" and group["filter"] is None  # "every failure of the task" is not this group
    assert "act on the jobs one by one" in staff.get("/jobwatch/failures/").content.decode()


def test_a_queue_without_samples_in_the_window_polls_quietly(staff, shop):
    QueueSample.objects.filter(queue="mail").delete()
    QueueSample.objects.create(queue="mail", sampled_at=now() - timedelta(days=3), depth=1)
    part = staff.get("/jobwatch/queues/mail/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="queue-facts")
    assert part.status_code == 200 and "No samples of this queue" in part.content.decode()


def test_names_are_text_in_charts_and_links_take_any_queue_name(staff):
    from monitors.web.charts import line_chart

    figure = line_chart([('<a href="https://evil.example">x</a>', [now()], [1])])
    assert figure["data"][0]["name"] == '&lt;a href="https://evil.example"&gt;x&lt;/a&gt;'
    QueueSample.objects.create(queue="tenant/a", sampled_at=now(), depth=1, consumers=0)
    assert 'href="/jobwatch/queues/tenant/a/"' in staff.get("/jobwatch/queues/").content.decode()
    assert staff.get("/jobwatch/queues/tenant/a/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="queue-facts").status_code == 200


def test_every_template_with_partials_loads_the_jobwatch_library_first():
    """On Django 5.2, {% partialdef %} comes from the jobwatch tag library (monitors/web/partials.py):
    a template that used it without loading the library would fail there, and only there."""
    for path in (Path(monitors.__file__).parent / "templates").rglob("*.html"):
        before, partial, _ = path.read_text().partition("{% partialdef")
        assert not partial or "{% load jobwatch %}" in before, path


@pytest.mark.django_db(databases=["default", "embedded"])
@pytest.mark.parametrize("key", ["1h", "7d"])
def test_the_queue_age_chart_draws_each_buckets_worst_moment_on_postgresql_and_sqlite(key):
    from monitors.web.windows import WINDOWS, bucket_times, queue_peaks

    window = WINDOWS[key]
    times = bucket_times(window)
    step = timedelta(seconds=window.bucket)
    # Three samples in the second bucket, one in the fourth, and a bucket whose samples know no age.
    samples = [("payments", times[1] + step / 4, 5.0), ("payments", times[1] + step / 2, 40.0),
               ("payments", times[1] + 3 * step / 4, 7.0), ("payments", times[3], 2.0),
               ("payments", times[5], None), ("mail", times[3] + step / 2, 1.5),
               ("payments", times[0] - step, 999.0)]  # before the window: not drawn
    for database in ("default", "embedded"):
        QueueSample.objects.using(database).bulk_create(
            [QueueSample(queue=queue, sampled_at=moment, depth=1, oldest_age=age) for queue, moment, age in samples])
        peaks = queue_peaks(window, "oldest_age", using=database)
        assert peaks == {"payments": ([times[1], times[3], times[5]], [40.0, 2.0, None]),
                         "mail": ([times[3]], [1.5])}, database


@pytest.mark.parametrize("key", ["15m", "1h", "6h", "7d"])
def test_the_last_15_minutes_tiles_read_the_same_whatever_the_window(key):
    """The default hour's per-minute points hold the last 15 minutes, so the tiles are summed from
    them; a window of wider points reads the minutes apart. Both must agree."""
    from dataclasses import replace

    from monitors.web.overview import activity
    from monitors.web.windows import WINDOWS

    minute = now().replace(second=0, microsecond=0)
    for ago, metric, count in [(0, "succeeded", 6), (2, "failed", 3), (5, "succeeded", 20), (14, "succeeded", 4),
                               (17, "failed", 50), (40, "succeeded", 70)]:  # the last two: before the 15 minutes
        JobTally.objects.create(minute=minute - timedelta(minutes=ago), metric=metric, task_name="t", count=count)
    end = now()
    tiles = activity(replace(WINDOWS[key], end=end))
    reference = activity(replace(WINDOWS["15m"], end=end))
    assert (tiles["throughput_now"], tiles["failure_rate_now"]) == (reference["throughput_now"], reference["failure_rate_now"])
    assert reference["failure_rate_now"] == round(100 * 3 / 33, 1)


def test_the_overview_reads_the_monitors_heartbeats_once_and_still_shows_its_banner(staff, shop):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        page = staff.get("/jobwatch/").content.decode()
    assert "The periodic monitor is not running" in page
    assert sum("monitors_monitorheartbeat" in query["sql"] for query in captured.captured_queries) == 1


def test_counts_and_estimates_are_planned_without_jit_compilation():
    """PostgreSQL JIT-compiles any plan costed above jit_above_cost, even one it only EXPLAINs for
    an estimate; over a large history that compiling took most of a count's budget and could not
    be cut short by the statement timeout. Here every plan is costed above it."""
    from django.db import connection

    from monitors.web.counting import statement_timeout

    if connection.vendor != "postgresql":
        pytest.skip("JIT is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SET jit_above_cost = 0")
        cursor.execute("SHOW jit")
        jit_before = cursor.fetchone()[0]
        try:
            with statement_timeout("default", 1000):
                cursor.execute("SHOW jit")
                assert cursor.fetchone()[0] == "off"
                cursor.execute("EXPLAIN SELECT count(*) FROM monitors_jobexecution WHERE runtime > 1")
                assert not any("JIT" in row[0] for row in cursor.fetchall())
            cursor.execute("SHOW jit")
            assert cursor.fetchone()[0] == jit_before  # SET LOCAL: the connection goes back as it was
        finally:
            cursor.execute("RESET jit_above_cost")


def test_a_count_inside_the_requests_transaction_leaves_its_settings_as_they_were():
    """With ATOMIC_REQUESTS a page's reads share one transaction: a count's timeout, whether it
    finished or was cut short, must not go on limiting the statements after it."""
    from django.db import DatabaseError, connection, transaction

    from monitors.web.counting import statement_timeout

    if connection.vendor != "postgresql":
        pytest.skip("statement timeouts are PostgreSQL's")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute("SHOW jit")
        jit = cursor.fetchone()[0]
        with statement_timeout("default", 5000):
            cursor.execute("SELECT 1")
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
        with pytest.raises(DatabaseError), statement_timeout("default", 20):
            cursor.execute("SELECT pg_sleep(1)")
        cursor.execute("SELECT current_setting('statement_timeout'), current_setting('jit'), pg_sleep(0.05)")
        assert cursor.fetchone()[:2] == ("0", jit)

"""Task speed without workers: the bucket and percentile arithmetic, the writer's histogram rows
(per minute and per hour, added up across batches), windows read from hourly rows in the middle
and per-minute rows at the ends, the comparison with the day before, and the pages' input and
escaping. (The times real workers measure: tests/test_task_speed.py.)"""

import itertools
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from monitors import timing
from monitors.conf import check_buckets
from monitors.models import JobHistogram
from monitors.recording.events import COUNTS_KEY, queue_wait
from monitors.recording.upsert import add_increments, histogram_increments, write_histograms
from monitors.web.speeds import RUNTIME, WAIT, spans, times_by_task, window_spans
from monitors.web.windows import WINDOWS, Window
from tests.brokers import staff_with

pytestmark = [pytest.mark.django_db]

HOSTILE = "ux.<svg onload=alert(3)>"


def event(task, metric, seconds):
    return {"task_id": "x", COUNTS_KEY: [(metric, task, "w@h", "default", "", seconds)]}


def record(moment, task, runtimes=(), waits=(), failed=()):
    """What the recorder's writer would write for these jobs at `moment`."""
    events = ([event(task, "succeeded", seconds) for seconds in runtimes] + [event(task, "started", seconds) for seconds in waits]
              + [event(task, "failed", seconds) for seconds in failed])
    write_histograms(histogram_increments(events, moment), connection)


# -- the arithmetic --------------------------------------------------------------------------------


def test_a_time_falls_in_the_first_bucket_whose_bound_is_not_below_it():
    assert timing.bucket_of(0) == 1 and timing.bucket_of(0.001) == 1 and timing.bucket_of(0.0011) == 2
    assert timing.bucket_of(0.3) == 300 and timing.bucket_of(0.301) == 500
    assert timing.bucket_of(86_400) == 86_400_000 and timing.bucket_of(86_401) == timing.OVERFLOW_MS
    assert timing.bucket_label(500) == "≤ 500 ms" and timing.bucket_label(90_000) == "≤ 1.5 min"
    assert timing.bucket_label(timing.OVERFLOW_MS) == "> 24 h"


def test_percentiles_interpolate_within_the_bucket_holding_the_rank():
    # 100 jobs: 90 in (200, 300] ms, 10 in (1, 1.5] s.
    counts = {300: 90, 1500: 10}
    assert timing.percentile(counts, 0.5) == pytest.approx(0.2 + 0.1 * 50 / 90)
    assert timing.percentile(counts, 0.9) == pytest.approx(0.3)
    assert timing.percentile(counts, 0.95) == pytest.approx(1.0 + 0.5 * 5 / 10)
    assert timing.percentile({}, 0.5) is None
    assert timing.percentile({timing.OVERFLOW_MS: 3}, 0.99) == 86_400  # "more than a day"
    speed = timing.Speed.of(counts, total_seconds=45.0)
    assert (speed.count, speed.mean) == (100, 0.45)


@settings(max_examples=300, deadline=None)
@given(counts=st.dictionaries(st.sampled_from(timing.UPPER_BOUNDS_MS), st.integers(0, 50), max_size=12),
       fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_several_percentiles_at_once_are_each_the_percentile_on_its_own(counts, fractions):
    """The task page's lines ask for several percentiles of each point in one walk, in any order
    and with repeats; each must be what asking for it alone gives: rank by rank through the
    buckets, never past the last one that counted a job."""
    together = timing.percentiles(counts, fractions)
    for fraction, value in zip(fractions, together, strict=True):
        assert value == timing.percentiles(counts, [fraction])[0]
        if not sum(counts.values()):
            assert value is None
            continue
        rank, seen = fraction * sum(counts.values()), 0
        for upper in sorted(counts):  # the bucket that holds the rank, found the slow way
            seen += counts[upper]
            if counts[upper] and seen >= rank:
                break
        assert timing.lower_bound_ms(upper) / 1000 <= value <= max(upper, timing.lower_bound_ms(upper)) / 1000


def test_the_estimate_stays_within_its_bucket_of_the_true_percentile():
    import random

    generator = random.Random(7)
    for _ in range(20):
        scale = 10 ** generator.uniform(-3, 3)
        times = [generator.lognormvariate(0, 1) * scale for _ in range(2000)]
        counts = {}
        for seconds in times:
            upper = timing.bucket_of(seconds)
            counts[upper] = counts.get(upper, 0) + 1
        true = sorted(times)[int(0.95 * len(times)) - 1]
        estimate = timing.percentile(counts, 0.95)
        upper = timing.bucket_of(true) / 1000
        lower = timing.lower_bound_ms(timing.bucket_of(true)) / 1000
        assert lower * 0.999 <= estimate <= timing.UPPER_BOUNDS_MS[timing.UPPER_BOUNDS_MS.index(upper * 1000) + 1] / 1000


def test_a_wait_is_measured_only_from_a_plausible_publish_time():
    started = 1_800_000_000.0

    def request(published, eta=None, redelivered=False):
        return SimpleNamespace(jobwatch_published_at=published, eta=eta, delivery_info={"redelivered": redelivered})

    assert queue_wait(request(started - 2.5), started) == pytest.approx(2.5)
    assert queue_wait(request(started + 1), started) == 0.0  # another host's clock a little ahead
    eta = datetime.fromtimestamp(started - 1, UTC)
    assert queue_wait(request(started - 100, eta=eta.isoformat()), started) == pytest.approx(1.0)
    assert queue_wait(request(started - 100, eta=eta), started) == pytest.approx(1.0)
    for garbage in (None, "soon", "nan", float("nan"), float("-inf"), 10**400, started + 7200, 0, [1]):
        assert queue_wait(request(garbage), started) is None, garbage
    assert queue_wait(request(started - 5, redelivered=True), started) is None
    assert queue_wait(request(started - 5, eta="not a date"), started) == pytest.approx(5.0)


def test_metric_bucket_settings_are_checked():
    check_buckets("x", [0.1, 1, 10])
    for bad in ([], [1, 1], [2, 1], [0, 1], ["a"], None, [1, float("inf")], [0.3, 0.1 * 3]):
        with pytest.raises(ImproperlyConfigured):
            check_buckets("x", bad)


# -- the writer's rows -----------------------------------------------------------------------------


def test_the_writer_counts_each_time_per_minute_hour_and_day_and_adds_up_batches():
    moment = datetime(2026, 11, 30, 10, 17, 42, tzinfo=UTC)
    first = histogram_increments([event("a.t", "succeeded", 0.25), event("a.t", "started", 2.0)], moment)
    second = histogram_increments([event("a.t", "succeeded", 0.26), event("a.t", "failed", 9.0),
                                   event("a.t", "sent", None), event("a.t", "retried", None)], moment)
    write_histograms(add_increments(first, second), connection)
    write_histograms(histogram_increments([event("a.t", "succeeded", 0.27)], moment + timedelta(minutes=1)), connection)
    rows = {(row.start, row.resolution, row.measure, row.outcome, row.upper_ms): (row.count, row.total)
            for row in JobHistogram.objects.all()}
    minute, hour = datetime(2026, 11, 30, 10, 17, tzinfo=UTC), datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert rows[(minute, 60, RUNTIME, "succeeded", 300)] == (2, pytest.approx(0.51))
    assert rows[(minute + timedelta(minutes=1), 60, RUNTIME, "succeeded", 300)] == (1, pytest.approx(0.27))
    assert rows[(hour, 3600, RUNTIME, "succeeded", 300)] == (3, pytest.approx(0.78))
    assert rows[(hour, 3600, RUNTIME, "failed", 10_000)] == (1, 9.0)  # failed jobs' runtime counts too
    assert rows[(minute, 60, WAIT, "", 2000)] == (1, 2.0)
    day = datetime(2026, 11, 30, tzinfo=UTC)
    assert rows[(day, 86400, RUNTIME, "succeeded", 300)] == (3, pytest.approx(0.78))
    assert len(rows) == 10  # nothing for sent or retried, which carry no time


# -- windows ---------------------------------------------------------------------------------------


def test_a_window_is_covered_once_by_days_then_hours_then_minutes():
    since = datetime(2026, 11, 20, 13, 47, 30, tzinfo=UTC)
    until = datetime(2026, 11, 27, 13, 47, 30, tzinfo=UTC)
    covered = spans(since, until)
    assert [resolution for resolution, _, _ in covered] == [60, 3600, 86400, 3600, 60]
    assert covered[2][1:] == (datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))
    assert covered[0][1] == datetime(2026, 11, 20, 13, 47, tzinfo=UTC)  # the minute `since` is in
    for (_, _, end), (_, start, _) in itertools.pairwise(covered):
        assert end == start  # no gap, no overlap
    assert spans(since, since + timedelta(minutes=10)) == [(60, since.replace(second=0), since + timedelta(minutes=10))]
    assert spans(since, since) == []


def test_a_window_reads_whole_hours_from_hourly_rows_and_its_ends_from_minute_rows():
    # Ending half an hour to an hour and a half ago, not now: a window that ends now reads the
    # current day's row for its part of today (spans' up_to_now), which in the first hours after
    # midnight UTC is the whole of that part.
    now = (timezone.now() - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)
    for minutes_ago in range(0, 24 * 60, 7):  # a job every 7 minutes for a day
        moment = now - timedelta(minutes=minutes_ago)
        record(moment, "a.t", runtimes=[0.1])
    window = Window("6h", timedelta(hours=6), 300, end=now)
    times = times_by_task(window, RUNTIME)["a.t"]
    counts, seconds = times.counts, times.seconds
    expected = sum(1 for minutes_ago in range(0, 24 * 60, 7) if minutes_ago <= 6 * 60)
    assert sum(counts.values()) == expected and seconds == pytest.approx(0.1 * expected)
    assert {resolution for resolution, _, _ in window_spans(window.since, window.until)} == {3600, 60}
    # Beyond the two days of per-minute rows, a window starts at a whole hour.
    week = Window("7d", timedelta(days=7), 7200, end=now)
    counts = times_by_task(week, RUNTIME)["a.t"].counts
    assert sum(counts.values()) == len(range(0, 24 * 60, 7))


def test_a_task_page_compares_with_the_same_window_a_day_before(client):
    now = timezone.now()
    record(now - timedelta(minutes=5), "a.slow", runtimes=[2.0] * 20, waits=[0.1] * 20)
    record(now - timedelta(days=1, minutes=5), "a.slow", runtimes=[0.2] * 20, waits=[0.1] * 20)
    client.force_login(staff_with())
    speed = client.get("/jobwatch/api/task/?name=a.slow&window=1h").json()
    assert 1.5 <= speed["runtime"]["p95"] <= 2.0 and 0.1 <= speed["runtime_before"]["p95"] <= 0.2
    page = client.get("/jobwatch/task/?name=a.slow&window=1h").content.decode()
    assert "× slower" in page
    record(now - timedelta(minutes=3), "a.slow", failed=[30.0] * 2)
    listing = client.get("/jobwatch/api/tasks/?window=1h").json()["tasks"]
    [row] = listing
    assert row["p95_change"] >= 7 and row["failed"] == 2 and row["runtime"]["count"] == 22


ODD_NAMES = [HOSTILE, "../../admin", "a/b c%20&x=1#frag", "line\nbreak", "ünï.cødé", "a" * 255]


def test_the_pages_escape_task_names_refuse_bad_input_and_need_staff(client):
    for name in ODD_NAMES:
        record(timezone.now(), name, runtimes=[0.5], waits=[1.0])
    assert client.get("/jobwatch/tasks/").status_code == 302  # to the sign-in page
    client.force_login(staff_with())
    for url in ("/jobwatch/tasks/", "/jobwatch/", f"/jobwatch/task/?{urlencode({'name': HOSTILE})}"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert b"<svg onload" not in page.content and b"&lt;svg onload=alert(3)&gt;" in page.content
    # Every name's link from the Tasks page leads to that task's page, whatever it holds.
    listing = client.get("/jobwatch/tasks/?window=1h").content.decode()
    links = re.findall(r'href="(/jobwatch/task/\?[^"]+)"', listing)
    reached = set()
    for link in links:
        speed = client.get(link.replace("&amp;", "&").replace("/jobwatch/", "/jobwatch/api/", 1)).json()
        assert speed["runtime"]["count"] == 1, link
        reached.add(speed["name"])
    assert reached == set(ODD_NAMES)
    for name in ODD_NAMES:  # the jobs list filtered to one task links to it too
        page = client.get(f"/jobwatch/jobs/?{urlencode({'task': name})}")
        assert page.status_code in (200, 400), name  # a filter may refuse a name; never a 500
    assert client.get("/jobwatch/tasks/?sort=bogus").status_code == 400
    assert client.get("/jobwatch/tasks/?window=2y").status_code == 400
    assert client.get("/jobwatch/task/").status_code == 400  # which task?
    assert client.get("/jobwatch/api/tasks/?sort=bogus").json()["error"]
    # A task nothing is known of: an empty page, not an error.
    quiet = client.get("/jobwatch/task/?name=never.ran")
    assert quiet.status_code == 200 and b"No job of this task" in quiet.content


def test_a_task_far_faster_than_before_reads_so(client):
    now = timezone.now()
    record(now - timedelta(minutes=5), "a.fast", runtimes=[0.001] * 20, waits=[0.001] * 20)
    record(now - timedelta(days=1, minutes=5), "a.fast", runtimes=[40.0] * 20, waits=[3000.0] * 20)
    client.force_login(staff_with())
    for url in ("/jobwatch/tasks/", "/jobwatch/task/?name=a.fast"):
        page = client.get(url)
        assert page.status_code == 200 and "× faster" in page.content.decode(), url


def test_pages_take_the_same_time_whatever_is_in_the_histograms(client, django_assert_max_num_queries):
    now = timezone.now()
    for task in range(30):
        record(now - timedelta(minutes=task), f"t.{task}", runtimes=[0.01 * (task + 1)] * 3, waits=[0.5])
    client.force_login(staff_with())
    with django_assert_max_num_queries(12):
        assert client.get("/jobwatch/tasks/?window=24h").status_code == 200
    with mock.patch("monitors.web.task_speed.SLOWEST_OF", 5), django_assert_max_num_queries(14):
        assert client.get("/jobwatch/task/?name=t.3&window=7d").status_code == 200
    tasks = client.get("/jobwatch/api/tasks/?window=1h&sort=p95").json()["tasks"]
    p95s = [row["runtime"]["p95"] for row in tasks]
    assert len(tasks) == 30 and p95s == sorted(p95s, reverse=True) and tasks[-1]["name"] == "t.0"
    assert WINDOWS["7d"].bucket % 3600 == 0  # a week's chart reads hourly rows


def test_a_window_ending_now_reads_the_current_day_and_hour_rows_whole():
    """Nothing is counted after now, so today's day row holds exactly midnight to now: a window
    ending now reads it rather than the hours and minutes of today; one ending earlier cannot."""
    since, until = datetime(2026, 11, 20, 13, 47, 10, tzinfo=UTC), datetime(2026, 11, 27, 13, 47, 10, tzinfo=UTC)
    now_spans = spans(since, until, up_to_now=True)
    assert now_spans[-1] == (86400, datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC))  # today whole
    assert [resolution for resolution, _, _ in now_spans].count(60) == 1  # only the window's first minutes
    past_spans = spans(since, until)
    assert past_spans[-1][0] == 60 and past_spans[-1][2] == until  # a past window's end, minute by minute
    assert sum(1 for resolution, _, _ in past_spans if resolution == 60) == 2


@pytest.mark.django_db
def test_the_histogram_is_vacuumed_after_a_hundredth_of_it_changes():
    """The Tasks pages read the histogram from its index alone only where vacuum has been since
    the rows changed: PostgreSQL's default (a fifth of the table) would leave hours of a busy
    site's rows to fetch one by one (migration 0020)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's autovacuum settings")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = 'monitors_jobhistogram'::regclass")
        options = dict(option.split("=") for option in cursor.fetchone()[0] or [])
    assert {name: float(value) for name, value in options.items()} == {
        "autovacuum_vacuum_scale_factor": 0.01, "autovacuum_vacuum_insert_scale_factor": 0.01,
        "autovacuum_analyze_scale_factor": 0.01}


def test_a_task_page_reads_its_histogram_counts_from_the_bucket_key_alone():
    """The unique bucket key carries count and total (migration 0021): the task page's read of one
    task's rows is answered from the index, and the recorder's upsert still finds the key by its
    columns."""
    if connection.vendor != "postgresql":
        pytest.skip("covering indexes are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'jobwatch_one_histogram_bucket'")
        assert cursor.fetchone()[0] == ("UNIQUE (task_name, resolution, start, measure, outcome, upper_ms)"
                                        " INCLUDE (count, total)")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN SELECT start, upper_ms, sum(count), sum(total) FROM monitors_jobhistogram"
                       " WHERE task_name = 'shop.charge' AND resolution = 3600 AND start >= now() - interval '7 days'"
                       " GROUP BY 1, 2")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using jobwatch_one_histogram_bucket" in plan, plan

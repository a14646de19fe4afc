"""The dashboard in a real browser: Debian's Chromium driven by Playwright against pytest-django's
live server (which serves the static files, as StaticLiveServerTestCase does), on real PostgreSQL
and Redis.

- Every page loads whole, with no console error, no uncaught exception and no Content Security
  Policy violation, and draws its charts; a screenshot of each goes to test-artifacts/screenshots/.
- The jobs list filters from its form and pages older by keyset, without repeating a job.
- A job is replayed from its page through the confirmation, into the broker's queue.
- A queue's depth follows the demo workload while it runs, without a reload.
- Markup in a job's arguments or error stays text on the job page, the jobs list and the failures.

Run only these with `pytest -m browser`; without a Chromium they are skipped (bin/test installs one).
"""

import base64
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from dashboard.celery import app
from monitors.models import JobExecution, JobTally, QueueSample
from monitors.recording.events import REPLAY_HEADER
from monitors.sampling import sample_queues
from tests.browser import (CHARGE, CHROMIUM_ARGS, CRM, TIMEOUT_MS, VIEWPORT, PageWatch, find_chromium, screenshot,
                           seed_dashboard)
from tests.workers import REPO, database_url_for_workers, wait_for

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (it is in requirements-dev.txt)")

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to drive: bin/test installs Debian's (apt-get install chromium) when run as root; "
                    "or set JOBWATCH_CHROMIUM to a Chromium binary")
    # Playwright's sync API keeps an asyncio event loop running in this thread (it switches to it
    # in a greenlet at every browser call), so Django takes the test's own thread for async code
    # and every ORM call from a test raises SynchronousOnlyOperation. The tests' queries run
    # between browser calls, never while the loop does anything: allowing them is safe here, and
    # only while this module's browser is up.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            chromium_browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            yield chromium_browser
            chromium_browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context, logged in as a staff superuser (the session cookie of a Django
    test client's login)."""
    client = Client()
    client.force_login(User.objects.create_superuser("oncall", "oncall@example.com", "pw"))
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    cookie = django_settings.SESSION_COOKIE_NAME
    context.add_cookies([{"name": cookie, "value": client.cookies[cookie].value, "url": live_server.url}])
    yield context.new_page()
    context.close()


@pytest.fixture
def watch(page, live_server):
    return PageWatch(page, live_server.url)


@pytest.fixture
def broker():
    """The site's broker (Redis, tests/settings.py), emptied: the live server sends to it."""
    url = django_settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.skip(f"these tests read the broker's queues on Redis, not {url.split(':')[0]}")
    client = redis.Redis.from_url(url)
    client.flushdb()
    return client


def ids_listed(page):
    """The task ids of the jobs list's rows, top to bottom."""
    return page.locator("#job-rows tbody a[href^='/jobwatch/jobs/']").evaluate_all(
        "links => links.map(link => link.getAttribute('href').split('/')[3])")


# -- Every page ------------------------------------------------------------------------------

PAGES = [
    ("overview", "/jobwatch/"), ("queues", "/jobwatch/queues/"), ("queue", "/jobwatch/queues/payments/"),
    ("jobs", "/jobwatch/jobs/"), ("job", "/jobwatch/jobs/{job}/"), ("failures", "/jobwatch/failures/"),
    ("fanout", "/jobwatch/fanout/"), ("orphans", "/jobwatch/orphans/"), ("circuits", "/jobwatch/circuits/"),
    ("workers", "/jobwatch/workers/"), ("findings", "/jobwatch/findings/"), ("finding", "/jobwatch/findings/{finding}/"),
    ("alerts", "/jobwatch/alerts/"), ("archive", "/jobwatch/archive/"), ("actions", "/jobwatch/actions/"),
    ("action", "/jobwatch/actions/{action}/"),
]
CHARTS_DRAWN = "() => [...document.querySelectorAll('.chart')].filter(chart => chart.querySelector('.main-svg')).length"


def test_every_page_loads_without_errors_or_policy_violations_and_draws_its_charts(page, watch, broker):
    ids = seed_dashboard()
    problems, charts = {}, {}
    for name, path in PAGES:
        url = path.format(**ids)
        response = page.goto(url)
        found = [] if response.status == 200 else [f"HTTP {response.status}"]
        if page.locator("main#page[data-page]").count() != 1:
            found.append("no <main id=page data-page=…>")
        if not page.evaluate("() => Boolean(window.htmx && window.Plotly)"):
            found.append("htmx or plotly.js did not load")
        expected = page.locator(".chart").count()
        try:
            page.wait_for_function(f"() => ({CHARTS_DRAWN})() >= {expected}", timeout=10_000)
        except sync_api.TimeoutError:
            found.append(f"{page.evaluate(CHARTS_DRAWN)} of {expected} charts drawn")
        charts[name] = page.evaluate(CHARTS_DRAWN)
        if name == "overview":
            # The time axes read as clock times: the points are sent as milliseconds of wall time.
            ticks = page.evaluate("() => [...document.querySelectorAll('.chart[data-chart=throughput-chart] .xtick text')].map(t => t.textContent)")
            if not ticks or not all(":" in tick for tick in ticks):
                found.append(f"the throughput chart's time axis reads {ticks}")
        page.wait_for_load_state("networkidle")
        screenshot(page, name)
        found += watch.take()
        if found:
            problems[url] = found
    assert not problems, json.dumps(problems, indent=2)
    assert charts["overview"] >= 3 and charts["queue"] >= 3 and charts["failures"] >= 1, charts


# -- The jobs list ---------------------------------------------------------------------------

def test_the_jobs_list_filters_from_its_form_and_pages_older_without_repeating_a_job(page, watch, monkeypatch):
    # The count is exact here whatever the machine's speed (the live server runs in this process):
    # its time budget is tested in test_web_pages, and on a loaded two-core machine running a
    # browser, a server and the tests, 20 ms for a count is not always there.
    from monitors.web import counting

    for budget in ("TIMEOUT_MS", "ESTIMATE_TIMEOUT_MS", "ANSWER_BUDGET_MS"):
        monkeypatch.setattr(counting, budget, 5000)
    now, jobs = timezone.now(), []
    for n in range(75):  # in id order, oldest first; other tasks and states in between
        at = now - timedelta(seconds=10 * (75 - n))
        common = {"enqueued_at": at, "updated_at": at, "queue": "payments", "args": [n], "kwargs": {}}
        jobs.append(JobExecution(task_id=f"charge-{n:03d}", task_name=CHARGE, state="failed", exception_type="GatewayError",
                                 **common))
        jobs.append(JobExecution(task_id=f"charged-{n:03d}", task_name=CHARGE, state="succeeded", **common))
        if n % 3 == 0:
            jobs.append(JobExecution(task_id=f"crm-{n:03d}", task_name=CRM, state="failed", exception_type="CRMError", **common))
    JobExecution.objects.bulk_create(jobs)

    page.goto("/jobwatch/jobs/")
    form = page.locator("#job-filters")
    form.locator("input[name=task]").fill(CHARGE)
    form.locator("select[name=state]").select_option("failed")
    with page.expect_navigation():
        form.get_by_role("button", name="Filter").click()
    assert "task=demo.tasks.charge_payment" in page.url and "state=failed" in page.url
    assert form.locator("input[name=task]").input_value() == CHARGE  # the form shows the filter it applied
    assert form.locator("select[name=state]").input_value() == "failed"
    newest = ids_listed(page)
    assert newest == [f"charge-{n:03d}" for n in range(74, 24, -1)]
    assert page.locator("#job-rows tbody tr:not(.state-failed)").count() == 0
    page.locator("#job-count").filter(has_text="75").wait_for()

    with page.expect_navigation():
        page.locator("#job-rows a[rel=next]").click()
    assert "before=" in page.url and "task=demo.tasks.charge_payment" in page.url and "state=failed" in page.url
    older = ids_listed(page)
    assert older == [f"charge-{n:03d}" for n in range(24, -1, -1)]
    assert not set(newest) & set(older)
    assert page.locator("#job-rows a[rel=next]").count() == 0  # the last page
    assert not watch.take()


# -- Replay ----------------------------------------------------------------------------------

REPLAY_QUEUE = "browser-replay"  # nobody consumes it: the replayed message stays to be read


def test_a_job_is_replayed_from_its_page_through_the_confirmation_into_the_broker(page, watch, broker):
    now = timezone.now()
    original = JobExecution.objects.create(
        task_id="browser-original", task_name="demo.tasks.echo", state="failed", queue=REPLAY_QUEUE, args=[42],
        kwargs={"note": "again"}, payload_complete=True, exception_type="ConnectionError", exception_message="refused",
        enqueued_at=now, finished_at=now, updated_at=now)

    page.goto(f"/jobwatch/jobs/{original.task_id}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Replay…", exact=True).click()
    assert page.locator("main#page").get_attribute("data-page") == "confirm"
    assert page.locator("h1").inner_text() == "Replay 1 job?"
    assert "1 job matches" in page.locator("main").inner_text()
    assert broker.llen(REPLAY_QUEUE) == 0  # the confirmation sent nothing
    screenshot(page, "replay-confirmation")

    with page.expect_navigation():
        page.get_by_role("button", name="Yes, replay 1", exact=True).click()
    assert re.search(r"/jobwatch/actions/\d+/$", page.url), page.url
    assert page.locator("main#page").get_attribute("data-page") == "action"
    assert page.locator(".outcome").inner_text().strip().lower().startswith("succeeded")
    assert "1 matched, 1 succeeded, 0 failed" in page.locator("#action-progress").inner_text()
    screenshot(page, "action-replay")

    [raw] = broker.lrange(REPLAY_QUEUE, 0, -1)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == "demo.tasks.echo" and headers["id"] != original.task_id
    assert headers[REPLAY_HEADER] == original.task_id
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([42], {"note": "again"})
    # The live server's recorder wrote the replay down as it was sent.
    replay = wait_for(lambda: JobExecution.objects.filter(replay_of=original.task_id).first(), timeout=10,
                      what="the replay's row")
    assert replay.task_id == headers["id"] and replay.state == "enqueued"
    assert not watch.take()


# -- A queue, live ---------------------------------------------------------------------------

def test_a_queue_page_follows_the_depth_while_the_demo_workload_runs_without_a_reload(page, watch, broker, settings,
                                                                                      tmp_path):
    # Samples one second apart land in buckets of their own (the sampler keeps one per bucket).
    settings.JOBWATCH = {**settings.JOBWATCH, "SAMPLE_INTERVAL": 1}
    for _ in range(3):
        app.send_task("demo.tasks.noop", queue="celery")
    sample_queues()
    page.goto("/jobwatch/queues/celery/")
    assert page.locator("#queue-facts #queue-depth").inner_text() == "3"
    page.evaluate("() => { window.__noReload = 1; }")

    # The demo shop at work (manage.py demo_workload, as bin/demo runs it) enqueues onto the
    # celery queue, which no worker consumes here; beat's sampling is played by this thread.
    log = open(tmp_path / "workload.log", "w")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url_for_workers(),
           "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    workload = subprocess.Popen([sys.executable, "manage.py", "demo_workload", "--rate", "20", "--duration", "3", "--seed", "7"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while workload.poll() is None:
            time.sleep(1.05)
            sample_queues()
        assert workload.returncode == 0, (tmp_path / "workload.log").read_text()[-3000:]
    finally:
        if workload.poll() is None:
            workload.kill()
        log.close()
    time.sleep(1.05)
    sample_queues()
    depth = QueueSample.objects.filter(queue="celery").order_by("-sampled_at").first().depth
    assert depth > 3

    page.wait_for_function("depth => document.querySelector('#queue-depth').textContent.trim() === depth",
                           arg=str(depth), timeout=20_000)
    assert page.evaluate("() => window.__noReload") == 1  # the same document: updated in place
    screenshot(page, "queue-live")
    assert not watch.take()


# -- Text from jobs stays text ---------------------------------------------------------------

SCRIPT = "<script>window.__pwned=1</script>"
IMAGE = "<img src=x onerror=window.__pwned=2>"
NOTHING_RAN = """() => ({
  pwned: typeof window.__pwned,
  images: document.querySelectorAll("img[src=x]").length,
  scripts: [...document.scripts].filter(s => s.type !== "application/json" && s.textContent.includes("__pwned")).length,
})"""


def test_markup_in_a_job_shows_as_text_on_the_job_page_the_jobs_list_and_the_failures(page, watch):
    now = timezone.now()
    JobExecution.objects.create(task_id="hostile-1", task_name="demo.tasks.echo", state="failed", queue="celery", args=[SCRIPT],
                                kwargs={"note": IMAGE}, payload_complete=True, exception_type="ValueError",
                                exception_message=f"bad input {IMAGE}", enqueued_at=now, finished_at=now, updated_at=now)
    JobTally.objects.create(minute=now.replace(second=0, microsecond=0), metric="failed", task_name="demo.tasks.echo",
                            queue="celery", exception="ValueError", count=1)

    page.goto("/jobwatch/jobs/hostile-1/")
    assert SCRIPT in page.locator("#job-args").text_content()
    assert IMAGE in page.locator("main").text_content()  # the error and the kwargs
    assert page.evaluate(NOTHING_RAN) == {"pwned": "undefined", "images": 0, "scripts": 0}

    page.goto("/jobwatch/jobs/?text=pwned")
    assert ids_listed(page) == ["hostile-1"]
    assert page.evaluate(NOTHING_RAN) == {"pwned": "undefined", "images": 0, "scripts": 0}

    page.goto("/jobwatch/failures/")
    assert IMAGE in page.locator("#failure-groups").text_content()
    assert page.evaluate(NOTHING_RAN) == {"pwned": "undefined", "images": 0, "scripts": 0}
    # Markup that got through would have been refused by the policy, and said so on the console.
    assert not watch.take()

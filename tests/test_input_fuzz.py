"""Bad input is a 400 with its name, never a 500: every route in Jobwatch's URLconf gets generated
values (hypothesis) for its path, for every query parameter its view declares
(monitors/web/params.py) and, for the POST-only changes, for every form field they read — plus
the values that once broke pages: a superscript "²" that passes str.isdigit(), month 13, an
offset of +99:00, an age older than the calendar, NUL."""

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitors import urls
from monitors.models import ActionLog, Finding, Incident, JobExecution
from monitors.actions.selection import FILTER_KEYS
from monitors.web.actions import CARRIED

pytestmark = pytest.mark.django_db

EDGES = ["²", "٣", "-1", "0", "1", "9" * 30, str(2**63), "2026-13-45T99:99", "2026-11-30T10:00+99:00", "9999999999d",
         "1e309s", "0001-01-01T00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-11-30", "30m", "NaN", " ", "%", "'",
         "<script>alert(1)</script>", "\x00", "a\x00b", "x" * 5000, "open", "all", "failed", "24h", "yes"]
VALUES = st.one_of(st.sampled_from(EDGES), st.text(max_size=40), st.integers(-(2**70), 2**70).map(str))
# Form fields the changes read (besides "confirmed", left out so that nothing is actually done).
FORM_FIELDS = sorted({*CARRIED, *FILTER_KEYS, "snooze", "next", "incident", "allow_large", "request_key"})
# Names a view might read without declaring them: a view that did would be fuzzed all the same.
COMMON = ["before", "after", "offset", "window", "state", "status", "q", "count", "task", "queue", "since", "until"]


def routes():
    assert all(isinstance(pattern, URLPattern) for pattern in urls.urlpatterns)
    return [pytest.param(pattern, id=str(pattern.pattern)) for pattern in urls.urlpatterns]


def view_of(pattern):
    return pattern.callback


def path_values(pattern, known):
    """A strategy for the route's path with generated values in its converters."""
    route = str(pattern.pattern)
    parts = re.split(r"<(?:(\w+):)?(\w+)>", route)
    strategies = []
    for index in range(0, len(parts) - 1, 3):
        literal, converter, _name = parts[index], parts[index + 1] or "str", parts[index + 2]
        strategies.append(st.just(literal))
        if converter == "int":
            strategies.append(st.one_of(st.sampled_from(known), st.integers(0, 2**70)).map(str))
        else:
            text = st.one_of(st.sampled_from(EDGES), st.text(min_size=1, max_size=40))
            if converter == "str":
                text = text.filter(lambda value: "/" not in value)
            strategies.append(text.map(lambda value: quote(value, safe="")).filter(bool))
    strategies.append(st.just(parts[-1]))
    return st.tuples(*strategies).map(lambda pieces: "/jobwatch/" + "".join(pieces))


@pytest.fixture
def seeded():
    now = timezone.now()
    job = JobExecution.objects.create(task_id="fuzz-1", task_name="shop.tasks.charge", state="failed", queue="default",
                                      args=[1], kwargs={}, updated_at=now, enqueued_at=now)
    finding = Finding.objects.create(detector="backlog", kind="queue_age", severity="warning", subject="default",
                                     title="default is behind", fingerprint="fuzz", first_seen=now, last_seen=now)
    incident = Incident.objects.create(fingerprint="fuzz", kind="queue_age", subject="default", severity="warning",
                                       title="default is behind", finding=finding, opened_at=now, last_seen=now)
    log = ActionLog.objects.create(at=now, username="fuzz", surface="dashboard", action="replay_jobs", target="x",
                                   parameters={}, outcome="succeeded")
    return [job.pk, finding.pk, incident.pk, log.pk]


@pytest.mark.parametrize("pattern", routes())
def test_no_route_answers_5xx_to_generated_input(pattern, seeded):
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_superuser("fuzzer", password="pw"))
    view = view_of(pattern)
    declared = sorted(getattr(view, "query_parameters", {}))
    post_only = pattern.name in {name for _, _, name in urls.CHANGES}
    names = FORM_FIELDS if post_only else sorted({*declared, *COMMON})

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=path_values(pattern, seeded), values=st.dictionaries(st.sampled_from(names), VALUES, max_size=4))
    def answers_without_5xx(path, values):
        values = {name: value for name, value in values.items() if name != "confirmed"}
        response = client.post(path, values) if post_only else client.get(path, values)
        # /healthz answers 503 when the monitor itself is unwell (here: no periodic task ran yet).
        expected_503 = pattern.name == "healthz" and response.status_code == 503
        assert response.status_code < 500 or expected_503, (path, values, response.status_code, response.content[:500])
        if response.status_code == 400 and "/api/" in path:
            assert response.json()["error"]

    answers_without_5xx()


@pytest.mark.parametrize("url, parameter", [
    ("/jobwatch/jobs/?since=2026-13-45T99:99", "since"), ("/jobwatch/jobs/?until=2026-11-30T10:00%2B99:00", "until"),
    ("/jobwatch/api/jobs/?since=9999999999d", "since"), ("/jobwatch/jobs/?before=%C2%B2", "before"),
    ("/jobwatch/api/findings/?after=%C2%B2", "after"), ("/jobwatch/archive/?before=%C2%B2", "before"),
    ("/jobwatch/api/actions/?before=%C2%B2", "before"), ("/jobwatch/queues/default/?offset=%C2%B2", "offset"),
    ("/jobwatch/api/jobs/?state=bogus", "state"), ("/jobwatch/api/?window=2y", "window"),
    ("/jobwatch/api/incidents/?state=sideways", "state"), ("/jobwatch/jobs/?task=a%00b", "task"),
])
def test_the_once_broken_urls_answer_400_naming_the_parameter(admin_client, url, parameter):
    response = admin_client.get(url)
    assert response.status_code == 400
    if "/api/" in url:
        assert response["Content-Type"] == "application/json"
        assert response.json()["parameter"] == parameter and parameter in response.json()["error"]
    else:
        assert parameter in response.content.decode()


def test_api_errors_are_json(admin_client):
    missing = admin_client.get("/jobwatch/api/jobs/no-such-job/")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json" and missing.json()["error"]
    outsider = Client()
    outsider.force_login(User.objects.create_user("visitor", password="pw", is_staff=False))
    refused = outsider.get("/jobwatch/api/jobs/")
    assert refused.status_code == 403 and refused.json()["error"]


def test_a_refusal_names_the_missing_permission(seeded):
    operator = Client()
    operator.force_login(User.objects.create_user("readonly", password="pw", is_staff=True))
    refused = operator.post("/jobwatch/jobs/replay/", {"id": "fuzz-1"})
    assert refused.status_code == 403
    assert "monitors.replay_jobs" in refused.content.decode()
    acknowledged = operator.post(f"/jobwatch/alerts/{seeded[2]}/acknowledge/")
    assert acknowledged.status_code == 403 and "monitors.acknowledge_incident" in acknowledged.content.decode()


def test_views_read_the_query_string_only_through_params():
    """One place parses parameters: a view reading request.GET itself would escape the 400s and
    the fuzz test's list of what it reads."""
    web = Path(urls.__file__).parent / "web"
    readers = [path.name for path in web.glob("*.py") if path.name not in {"params.py", "errors.py"}
               and "request.GET" in path.read_text()]
    assert readers == []

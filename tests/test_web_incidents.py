"""Incidents on the dashboard, on real PostgreSQL: triage order (most severe, then largest, then
oldest) on the Overview, Findings and Alerts and in their JSON; "N more →" wherever a list is cut;
times as "07:01 UTC · 9 min"; acknowledging and snoozing several incidents at once, audited and
refused without the permission; an incident's page with its findings (the lead first), where its
jobs are and what was sent; merged incidents out of the active list; text from jobs escaped."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from monitors.alerts import run_alerts
from monitors.heartbeats import WATCHED
from monitors.models import ActionLog, Circuit, Finding, Incident, MonitorHeartbeat, Notification, NotificationChannel
from monitors.templatetags.jobwatch import since, span, when

pytestmark = [pytest.mark.django_db]


def ago(**delta):
    return timezone.now() - timedelta(**delta)


def login(name, staff=True, acknowledge=False):
    user = User.objects.create_user(name, is_staff=staff)
    if acknowledge:
        user.user_permissions.add(Permission.objects.get(codename="acknowledge_incident"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff():
    return login("viewer")


@pytest.fixture
def oncall():
    return login("oncall", acknowledge=True)


def finding(title, severity="warning", count=1, opened=None, keys=(), kind="failure_rate", **fields):
    moment = opened or ago(minutes=5)
    return Finding.objects.create(fingerprint=f"{kind}:{title}", detector="test", kind=kind, subject=title, severity=severity,
                                  title=title, explanation=f"Why: {title}.", fix=f"fix {title}", evidence={}, count=count,
                                  keys=list(keys), first_seen=moment, last_seen=moment, **fields)


def incident(title, severity="warning", impact=1, opened=None, state="open", keys=(), **fields):
    """An incident with its lead finding, made directly (the grouping itself is tested in test_incidents.py)."""
    over = {} if state in Incident.ACTIVE else {"status": "resolved", "resolved_at": fields.get("resolved_at") or timezone.now()}
    lead = finding(title, severity, impact, opened, keys, **over)
    made = Incident.objects.create(fingerprint=lead.fingerprint, finding=lead, kind=lead.kind, subject=title, severity=severity,
                                   title=title, fix=lead.fix, impact=impact, keys=list(keys), opened_at=lead.first_seen,
                                   last_seen=lead.last_seen, state=state, **fields)
    Finding.objects.filter(pk=lead.pk).update(incident=made)
    return made


@pytest.fixture
def triage():
    """Four incidents whose triage order is neither their age, nor their impact, nor their ids."""
    big_warning = incident("big warning", "warning", 500, ago(hours=1))
    small_critical = incident("small critical", "critical", 3, ago(minutes=10))
    older_big_warning = incident("older big warning", "warning", 500, ago(hours=2))
    small_warning = incident("small warning", "warning", 50, ago(hours=3))
    info = incident("an info", "info", 9000, ago(days=2))
    return [small_critical, older_big_warning, big_warning, small_warning, info]


def titles_in(html, titles):
    """The titles in the order the page shows them."""
    return sorted(titles, key=lambda title: html.index(f">{title}<"))


# -- triage order ----------------------------------------------------------------------------------


def test_it_orders_incidents_by_severity_then_impact_then_age_on_alerts_and_overview(staff, triage):
    expected = [item.pk for item in triage]
    assert [row["id"] for row in staff.get("/jobwatch/api/alerts/").json()["active"]] == expected
    assert [row["id"] for row in staff.get("/jobwatch/api/").json()["incidents"]] == expected
    titles = [item.title for item in triage]
    assert titles_in(staff.get("/jobwatch/alerts/").content.decode(), titles) == titles
    assert titles_in(staff.get("/jobwatch/").content.decode(), titles) == titles


def test_it_orders_findings_the_same_way_on_the_findings_page_and_the_overview(staff, triage):
    expected = [item.finding_id for item in triage]
    assert [row["id"] for row in staff.get("/jobwatch/api/findings/").json()["findings"]] == expected
    assert [row["id"] for row in staff.get("/jobwatch/api/").json()["top_findings"]] == expected
    titles = [item.title for item in triage]
    findings_page = staff.get("/jobwatch/findings/").content.decode()
    assert titles_in(findings_page, titles) == titles
    overview = staff.get("/jobwatch/").content.decode()
    table = overview[overview.index("<h2>Open findings</h2>"):]
    assert titles_in(table, titles) == titles


def test_the_alerts_row_says_severity_state_since_evidence_and_impact(staff, triage):
    row = staff.get("/jobwatch/api/alerts/").json()["active"][0]
    assert row["title"] == "small critical" and row["severity"] == "critical" and row["state"] == "open"
    assert row["findings"] == 1 and row["impact"] == 3 and row["fix"] == "fix small critical"
    html = staff.get("/jobwatch/alerts/").content.decode()
    assert "3 jobs" in html and "1 finding<" in html and "· 10 min" in html


def test_findings_page_in_triage_order_pages_without_repeating_or_skipping(staff):
    base = ago(hours=1)
    Finding.objects.bulk_create([
        Finding(fingerprint=f"f:{n}", detector="test", kind="failure_rate", subject=str(n), severity=("critical", "warning", "info")[n % 3],
                title=f"finding {n}", explanation="…", count=n % 7, first_seen=base + timedelta(seconds=n % 11), last_seen=base)
        for n in range(130)])
    first = staff.get("/jobwatch/api/findings/").json()
    assert len(first["findings"]) == 100 and first["more"] == 30
    second = staff.get(f"/jobwatch/api/findings/?after={first['next_after']}").json()
    assert len(second["findings"]) == 30 and second["more"] == 0 and second["next_after"] is None
    rows = first["findings"] + second["findings"]
    assert len({row["id"] for row in rows}) == 130
    rank = {"critical": 0, "warning": 1, "info": 2}
    keys = [(rank[row["severity"]], -row["count"], row["first_seen"], row["id"]) for row in rows]
    assert keys == sorted(keys)
    html = staff.get("/jobwatch/findings/").content.decode()
    assert f'href="?after={first["next_after"]}" rel="next">30 more →</a>' in html


# -- "N more →" ------------------------------------------------------------------------------------


def test_cut_lists_say_how_many_more_and_link_to_the_whole_list(staff):
    for n in range(7):
        incident(f"problem {n}", impact=n)
    for n in range(6):
        finding(f"loose finding {n}")
    for n in range(53):
        incident(f"old problem {n}", state="resolved", resolved_at=ago(minutes=1))
    overview = staff.get("/jobwatch/").content.decode()
    assert '<a href="/jobwatch/alerts/">2 more →</a>' in overview  # 7 open incidents, 5 shown
    assert '<a href="/jobwatch/findings/">3 more →</a>' in overview  # 13 open findings, 10 shown
    data = staff.get("/jobwatch/api/").json()
    assert len(data["incidents"]) == 5 and data["incidents_more"] == 2 and data["open_incidents"] == 7
    assert len(data["top_findings"]) == 10 and data["findings_more"] == 3
    alerts = staff.get("/jobwatch/alerts/").content.decode()
    assert '<a href="/jobwatch/incidents/?state=over">3 more →</a>' in alerts
    over = staff.get("/jobwatch/api/incidents/?state=over").json()["incidents"]
    assert len(over) == 53 and all(row["state"] == "resolved" for row in over)


def test_nothing_more_is_offered_when_nothing_is_cut(staff, triage):
    assert "more →" not in staff.get("/jobwatch/").content.decode()
    assert "more →" not in staff.get("/jobwatch/alerts/").content.decode()
    assert "more →" not in staff.get("/jobwatch/findings/").content.decode()


def test_an_incident_with_many_places_shows_four_on_the_overview_and_the_rest_on_its_page(staff):
    made = incident("wide", keys=[f"task:shop.t{n}" for n in range(6)])
    Finding.objects.filter(incident=made).update(keys=[f"task:shop.t{n}" for n in range(6)])
    overview = staff.get("/jobwatch/").content.decode()
    assert overview.count("/jobwatch/jobs/?task=shop.t") == 4
    assert f'<a href="/jobwatch/incidents/{made.pk}/">2 more →</a>' in overview
    assert staff.get(f"/jobwatch/incidents/{made.pk}/").content.decode().count("/jobwatch/jobs/?task=shop.t") == 6


# -- times -----------------------------------------------------------------------------------------


def text(html):
    return re.sub(r"<[^>]+>", "", str(html))


def test_times_are_absolute_with_the_zone_and_relative():
    moment = ago(minutes=9, seconds=5)
    local = timezone.localtime(moment)
    today = local.date() == timezone.localtime().date()
    clock = local.strftime("%H:%M UTC") if today else local.strftime("%Y-%m-%d %H:%M UTC")
    assert text(since(moment)) == f"{clock} · 9 min"
    assert text(when(moment)) == f"{clock} · 9 min ago"
    assert f'datetime="{local.isoformat(timespec="seconds")}"' in since(moment)
    two_days = timezone.localtime(ago(days=2, hours=3))
    assert text(since(two_days)) == f"{two_days:%Y-%m-%d %H:%M} UTC · 2 d 3 h"
    assert text(when(timezone.now() + timedelta(minutes=50, seconds=30))).endswith("· in 50 min")
    assert since(None) == "–"
    assert [span(s) for s in (0, 59, 60, 3599, 3600, 3660, 86400, 90000)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h", "1 h 1 min", "1 d", "1 d 1 h"]


def test_pages_show_since_with_the_zone_instead_of_timesince(staff, triage):
    for url in ("/jobwatch/", "/jobwatch/alerts/", "/jobwatch/findings/", f"/jobwatch/findings/{triage[0].finding_id}/",
                f"/jobwatch/incidents/{triage[0].pk}/"):
        html = staff.get(url).content.decode()
        assert "UTC</time> · 10 min" in html, url
        assert not re.search(r"\d\xa0(minute|hour|day)", html), url  # timesince's "0 minutes"


# -- acknowledge and snooze, several at once -------------------------------------------------------


def test_it_acknowledges_the_ticked_incidents_in_one_post_each_audited(oncall, triage):
    first, second = triage[0], triage[1]
    response = oncall.post("/jobwatch/alerts/acknowledge/", {"incident": [first.pk, second.pk]})
    assert response.status_code == 302 and response["Location"] == "/jobwatch/alerts/"
    assert set(Incident.objects.filter(acknowledged_by="oncall").values_list("pk", flat=True)) == {first.pk, second.pk}
    logs = ActionLog.objects.filter(action="acknowledge_incident").order_by("pk")
    assert [(log.username, log.outcome, log.target, log.surface) for log in logs] == [
        ("oncall", "succeeded", f"incident {first.pk}", "dashboard"), ("oncall", "succeeded", f"incident {second.pk}", "dashboard")]
    oncall.post("/jobwatch/alerts/acknowledge/", {"incident": [triage[2].pk, triage[3].pk], "snooze": "4h"})
    snoozed = Incident.objects.filter(pk__in=[triage[2].pk, triage[3].pk])
    assert all(item.snoozed_until > timezone.now() + timedelta(hours=3) and not item.acknowledged_at for item in snoozed)
    assert ActionLog.objects.filter(parameters__snooze_seconds=4 * 3600, outcome="succeeded").count() == 2


def test_bulk_acknowledge_without_the_permission_is_refused_named_and_audited(staff, triage):
    response = staff.post("/jobwatch/alerts/acknowledge/", {"incident": [triage[0].pk, triage[1].pk]})
    assert response.status_code == 403
    assert "monitors.acknowledge_incident" in response.content.decode() and "2 of 2" in response.content.decode()
    assert list(ActionLog.objects.order_by("pk").values_list("username", "outcome", "target")) == [
        ("viewer", "refused", f"incident {triage[0].pk}"), ("viewer", "refused", f"incident {triage[1].pk}")]
    assert not Incident.objects.filter(acknowledged_at__isnull=False).exists()
    single = staff.post(f"/jobwatch/alerts/{triage[0].pk}/acknowledge/")
    assert single.status_code == 403 and "monitors.acknowledge_incident" in single.content.decode()


def test_bulk_acknowledge_asks_for_a_post_a_choice_and_a_known_snooze(oncall, triage, client):
    assert oncall.get("/jobwatch/alerts/acknowledge/").status_code == 405
    assert oncall.post("/jobwatch/alerts/acknowledge/", {}).status_code == 400
    assert oncall.post("/jobwatch/alerts/acknowledge/", {"incident": [triage[0].pk], "snooze": "2y"}).status_code == 400
    assert oncall.post("/jobwatch/alerts/acknowledge/", {"incident": [999999]}).status_code == 404
    assert not Incident.objects.filter(acknowledged_at__isnull=False).exists()
    anonymous = client.post("/jobwatch/alerts/acknowledge/", {"incident": [triage[0].pk]})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    outsider = login("customer", staff=False, acknowledge=True)
    assert outsider.post("/jobwatch/alerts/acknowledge/", {"incident": [triage[0].pk]}).status_code == 403


def test_the_alerts_page_has_one_form_with_a_checkbox_per_active_incident(staff, triage):
    html = staff.get("/jobwatch/alerts/").content.decode()
    form = html[html.index('<form method="post" action="/jobwatch/alerts/acknowledge/">'):html.index("</form>")]
    assert "csrfmiddlewaretoken" in form
    assert sorted(int(pk) for pk in re.findall(r'name="incident" value="(\d+)"', form)) == sorted(item.pk for item in triage)
    assert f'formaction="/jobwatch/alerts/{triage[0].pk}/acknowledge/"' in form


def test_acknowledging_from_an_incident_page_returns_to_it(oncall, triage):
    page = f"/jobwatch/incidents/{triage[0].pk}/"
    response = oncall.post(f"/jobwatch/alerts/{triage[0].pk}/acknowledge/", {"next": page})
    assert response.status_code == 302 and response["Location"] == page
    elsewhere = oncall.post(f"/jobwatch/alerts/{triage[1].pk}/acknowledge/", {"next": "https://evil.example/"})
    assert elsewhere["Location"] == "/jobwatch/alerts/"
    assert "by oncall" in oncall.get(page).content.decode()


# -- an incident's page ----------------------------------------------------------------------------


@pytest.fixture
def outage():
    """A payment service's outage as the detectors report it, grouped by the alert pass."""
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=timezone.now() + timedelta(days=1))
    start = ago(minutes=20)
    rate = finding("shop.charge fails 40 % of the time", "critical", 40, start, keys=["task:shop.charge"])
    circuit = finding("Circuit payments-api is open", "critical", 25, start, keys=["service:payments-api"],
                      kind="circuit_open", links=["task:shop.charge", "queue:payments"])
    age = finding("payments: oldest job waits 4 min", "warning", 25, start, keys=["queue:payments"], kind="queue_oldest_age")
    Circuit.objects.create(name="payments-api", state="open")
    run_alerts(start + timedelta(seconds=5))
    run_alerts(start + timedelta(seconds=45))
    made = Incident.objects.get(state__in=Incident.ACTIVE)
    channel = NotificationChannel.objects.create(name="ops-hook", kind="webhook", target="https://hooks.example/secret-token")
    Notification.objects.create(incident=made, channel=channel, event="opened", status="sent", attempts=1,
                                created_at=start + timedelta(seconds=45), sent_at=start + timedelta(seconds=46))
    return made, [circuit, rate, age]


def test_the_incident_page_lists_its_findings_lead_first_and_where_its_jobs_are(staff, outage):
    made, (circuit, rate, age) = outage
    assert made.finding_id == circuit.pk
    html = staff.get(f"/jobwatch/incidents/{made.pk}/").content.decode()
    assert titles_in(html, [rate.title, age.title, circuit.title]) == [circuit.title, rate.title, age.title]
    for item in (circuit, rate, age):
        assert f'href="/jobwatch/findings/{item.pk}/"' in html
    assert 'href="/jobwatch/jobs/?task=shop.charge"' in html
    assert 'href="/jobwatch/jobs/?queue=payments"' in html
    assert 'href="/jobwatch/jobs/?circuit=payments-api"' in html and 'href="/jobwatch/circuits/#circuit-payments-api"' in html
    assert "fix Circuit payments-api is open" in html and "Why: Circuit payments-api is open." in html
    assert "40 jobs waiting, failed or orphaned" in html
    assert "ops-hook" in html and "secret-token" not in html
    assert 'action="/jobwatch/alerts/' in html  # acknowledge and snooze


def test_the_incident_json_lists_its_findings_and_notifications(staff, outage):
    made, (circuit, rate, age) = outage
    data = staff.get(f"/jobwatch/api/incidents/{made.pk}/").json()
    assert data["incident"]["id"] == made.pk and data["incident"]["impact"] == 40 and data["incident"]["severity"] == "critical"
    assert [row["id"] for row in data["findings"]] == [circuit.pk, rate.pk, age.pk] and data["findings_total"] == 3
    assert data["lead"]["id"] == circuit.pk
    assert {"label": "jobs of shop.charge", "url": "/jobwatch/jobs/?task=shop.charge"} in data["job_links"]
    assert [(sent["channel"], sent["event"], sent["status"]) for sent in data["notifications"]] == [("ops-hook", "opened", "sent")]
    assert "secret-token" not in str(data)


def test_the_overview_leads_with_the_open_incident_its_fix_and_its_jobs(staff, outage):
    made, _ = outage
    html = staff.get("/jobwatch/").content.decode()
    assert html.index(made.title) < html.index("<h2>Open findings</h2>")
    assert "Usual fix: fix Circuit payments-api is open" in html
    assert 'href="/jobwatch/jobs/?task=shop.charge"' in html
    assert re.search(r'<div class="figure">1</div><div class="label">open incident · 1 critical · 3 findings', html)
    row = staff.get("/jobwatch/api/").json()["incidents"][0]
    assert row["id"] == made.pk and row["findings"] == 3 and row["job_links"]
    assert dict(staff.get("/jobwatch/api/").json()["incidents_by_severity"])["critical"] == 1


def test_the_finding_page_links_to_its_incident(staff, outage):
    made, (circuit, rate, _) = outage
    html = staff.get(f"/jobwatch/findings/{rate.pk}/").content.decode()
    assert f'href="/jobwatch/incidents/{made.pk}/"' in html
    assert staff.get(f"/jobwatch/api/findings/{rate.pk}/").json()["incident"]["id"] == made.pk
    assert "this finding is its lead" in staff.get(f"/jobwatch/findings/{circuit.pk}/").content.decode()
    listed = staff.get(f"/jobwatch/api/findings/?incident={made.pk}").json()["findings"]
    assert {row["id"] for row in listed} == set(made.findings.values_list("pk", flat=True))


@pytest.mark.parametrize("path", ["incidents/{pk}/", "incidents/"])
def test_incident_pages_need_staff_and_answer_whole_as_a_fragment_and_as_json(client, staff, triage, path):
    url = "/jobwatch/" + path.format(pk=triage[0].pk)
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.get(url.replace("/jobwatch/", "/jobwatch/api/", 1)).status_code == 401
    outsider = login("customer", staff=False)
    assert outsider.get(url).status_code == 403
    page = staff.get(url)
    assert page.status_code == 200 and page.content.decode().startswith("<!doctype html>")
    target = "incident-state" if "{pk}" in path else "incident-rows"
    fragment = staff.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=target).content.decode()
    assert f'id="{target}"' in fragment and "<header>" not in fragment
    assert staff.get(url.replace("/jobwatch/", "/jobwatch/api/", 1)).json()
    assert staff.get("/jobwatch/incidents/999999/").status_code == 404


# -- merged incidents ------------------------------------------------------------------------------


def test_a_merged_incident_is_not_active_and_says_where_it_went(staff, triage):
    keeper = triage[0]
    merged = incident("folded in", "critical", 999, state="merged", merged_into=keeper, resolved_at=ago(minutes=1))
    assert merged.pk not in [row["id"] for row in staff.get("/jobwatch/api/alerts/").json()["active"]]
    assert merged.pk not in [row["id"] for row in staff.get("/jobwatch/api/").json()["incidents"]]
    assert [row["id"] for row in staff.get("/jobwatch/api/alerts/").json()["recent"]] == [merged.pk]
    alerts = staff.get("/jobwatch/alerts/").content.decode()
    assert f'merged into <a href="/jobwatch/incidents/{keeper.pk}/">#{keeper.pk}</a>' in alerts
    assert f'value="{merged.pk}"' not in alerts  # nothing to acknowledge
    page = staff.get(f"/jobwatch/incidents/{merged.pk}/").content.decode()
    assert f'Merged into <a href="/jobwatch/incidents/{keeper.pk}/">' in page and "Snooze" not in page


def test_grouping_by_the_alert_pass_merges_and_the_merged_one_leaves_the_active_list(staff):
    """Two symptoms opened apart, then the circuit behind both: one incident, the other merged."""
    for task in WATCHED:
        MonitorHeartbeat.objects.create(task=task, last_run_at=timezone.now() + timedelta(days=1))
    start = ago(minutes=30)
    finding("shop.sync fails", "warning", 10, start, keys=["task:shop.sync"])
    finding("crm: oldest job waits", "warning", 20, start, keys=["queue:crm"], kind="queue_oldest_age")
    run_alerts(start + timedelta(seconds=2))
    assert Incident.objects.filter(state__in=Incident.ACTIVE).count() == 2
    finding("Circuit crm is open", "critical", 20, start + timedelta(seconds=5), keys=["service:crm"], kind="circuit_open",
            links=["task:shop.sync", "queue:crm"])
    run_alerts(start + timedelta(seconds=8))
    keeper = Incident.objects.get(state__in=Incident.ACTIVE)
    merged = Incident.objects.get(state=Incident.State.MERGED)
    assert [row["id"] for row in staff.get("/jobwatch/api/alerts/").json()["active"]] == [keeper.pk]
    assert [row["id"] for row in staff.get("/jobwatch/api/").json()["incidents"]] == [keeper.pk]
    assert f'merged into <a href="/jobwatch/incidents/{keeper.pk}/">#{keeper.pk}</a>' in staff.get("/jobwatch/alerts/").content.decode()
    assert [row["findings"] for row in staff.get("/jobwatch/api/alerts/").json()["active"]] == [3]
    assert merged.merged_into_id == keeper.pk


# -- escaping --------------------------------------------------------------------------------------


def test_titles_and_names_from_jobs_are_escaped_everywhere(staff):
    made = incident("<script>alert(1)</script> in <b>shop</b>", "critical", 3, keys=["task:<i>evil</i>.task"])
    Finding.objects.filter(incident=made).update(keys=["task:<i>evil</i>.task"], fix="run <u>this</u>")
    Incident.objects.filter(pk=made.pk).update(fix="run <u>this</u>")
    for url in ("/jobwatch/", "/jobwatch/alerts/", "/jobwatch/findings/", f"/jobwatch/incidents/{made.pk}/",
                f"/jobwatch/findings/{made.finding_id}/", "/jobwatch/incidents/"):
        html = staff.get(url).content.decode()
        assert "<script>alert" not in html and "<b>shop</b>" not in html and "<u>this</u>" not in html, url
        assert "<i>evil</i>" not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    page = staff.get(f"/jobwatch/incidents/{made.pk}/").content.decode()
    assert 'href="/jobwatch/jobs/?task=%3Ci%3Eevil%3C%2Fi%3E.task"' in page

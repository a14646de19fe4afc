"""Forcing a circuit open or closed, or resetting it: one implementation (monitors/actions/)
behind the admin and the command line, each change checked against monitors.force_circuit and
written to the audit log — refusals too."""

import json
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command

from monitors.actions import ActionRefused, force_circuit
from monitors.circuits import CircuitBreaker, CircuitOpenError
from monitors.circuits.stores import DatabaseStore
from monitors.models import ActionLog, Circuit, CircuitEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def breaker():
    breaker = CircuitBreaker("mail-relay", store=DatabaseStore("default"), fail_max=2)
    with breaker:
        pass  # the circuit is known once a process has used it
    return breaker


def staff(username, can_force):
    user = User.objects.create_user(username, password="pw", is_staff=True)
    if can_force:
        user.user_permissions.add(Permission.objects.get(codename="force_circuit"))
        user = User.objects.get(pk=user.pk)  # permissions are cached per instance
    return user


def test_forcing_needs_the_permission_and_a_refusal_is_audited(breaker):
    with pytest.raises(ActionRefused):
        force_circuit(staff("viewer", can_force=False), "mail-relay", "open", surface="dashboard")
    assert Circuit.objects.get(name="mail-relay").state == "closed"
    log = ActionLog.objects.get()
    assert (log.username, log.action, log.target, log.outcome) == ("viewer", "force_circuit", "mail-relay", "refused")


def test_forced_open_refuses_every_call_until_reset_and_each_change_is_audited(breaker):
    operator = staff("oncall", can_force=True)
    force_circuit(operator, "mail-relay", "open", reason="relay maintenance", surface="dashboard")
    with pytest.raises(CircuitOpenError, match="forced-open"), breaker:
        pass
    force_circuit(operator, "mail-relay", "reset", surface="dashboard")
    with breaker:
        pass

    events = list(CircuitEvent.objects.filter(circuit="mail-relay").order_by("id"))
    assert [(event.to_state, event.cause) for event in events] == [
        ("forced_open", "forced open by oncall (dashboard): relay maintenance"),
        ("closed", "reset by oncall (dashboard)"),
    ]
    logs = list(ActionLog.objects.order_by("id").values_list("parameters", "outcome", "succeeded"))
    assert logs == [({"change": "open", "reason": "relay maintenance"}, "succeeded", 1), ({"change": "reset", "reason": ""}, "succeeded", 1)]


def test_forced_closed_lets_calls_through_whatever_fails(breaker):
    force_circuit(staff("oncall", can_force=True), "mail-relay", "close", surface="dashboard")
    for _ in range(5):
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError("relay down")
    assert breaker.state().state == "forced_closed"


def test_the_command_lists_circuits_and_changes_one_as_a_named_user(breaker):
    staff("oncall", can_force=True)
    output = StringIO()
    call_command("jobwatch_circuits", "--force-open", "mail-relay", "--user", "oncall", "--dry-run", stdout=output)
    assert Circuit.objects.get(name="mail-relay").state == "closed"
    call_command("jobwatch_circuits", "--force-open", "mail-relay", "--user", "oncall", "--reason", "x", stdout=output)
    assert "mail-relay is now: forced open" in output.getvalue()

    listing = StringIO()
    call_command("jobwatch_circuits", "--json", stdout=listing)
    [row] = json.loads(listing.getvalue())["circuits"]
    assert (row["name"], row["state"], row["forced_by"]) == ("mail-relay", "forced_open", "oncall (command)")
    assert list(ActionLog.objects.order_by("id").values_list("dry_run", "outcome")) == [(True, "previewed"), (False, "succeeded")]

    with pytest.raises(CommandError, match="--user"):
        call_command("jobwatch_circuits", "--reset", "mail-relay")
    staff("viewer", can_force=False)
    with pytest.raises(CommandError, match="lacks the permission"):
        call_command("jobwatch_circuits", "--reset", "mail-relay", "--user", "viewer")
    with pytest.raises(CommandError, match="no circuit named"):
        call_command("jobwatch_circuits", "--reset", "no-such-service", "--user", "oncall")


def test_the_admin_action_asks_for_confirmation_then_changes_and_audits(client, breaker):
    operator = staff("oncall", can_force=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_circuit"))
    client.force_login(operator)
    circuit = Circuit.objects.get(name="mail-relay")
    selection = {"action": "force_open", "_selected_action": [circuit.pk]}

    page = client.post("/admin/monitors/circuit/", selection)
    assert page.status_code == 200 and b"Are you sure you want to force open 1 circuits?" in page.content
    assert Circuit.objects.get(name="mail-relay").state == "closed"  # nothing changed yet

    done = client.post("/admin/monitors/circuit/", {**selection, "confirmed": "yes", "reason": "planned"})
    assert done.status_code == 302
    assert Circuit.objects.get(name="mail-relay").state == "forced_open"
    assert ActionLog.objects.get().surface == "admin"


def test_the_admin_hides_the_actions_from_staff_without_the_permission(client, breaker):
    viewer = staff("viewer", can_force=False)
    viewer.user_permissions.add(Permission.objects.get(codename="view_circuit"))
    client.force_login(viewer)
    page = client.get("/admin/monitors/circuit/")
    assert page.status_code == 200 and b"force_open" not in page.content
    client.post("/admin/monitors/circuit/", {"action": "force_open", "_selected_action": [Circuit.objects.get().pk],
                                            "confirmed": "yes"})
    assert Circuit.objects.get().state == "closed"
    assert client.get("/admin/monitors/circuit/", follow=False).status_code == 200
    client.logout()
    assert client.get("/admin/monitors/circuit/").status_code == 302  # anonymous: to the login page

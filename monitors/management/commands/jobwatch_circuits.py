"""List circuits, or force one open / closed, or reset it (audited, as the Django user --user)."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from monitors.actions import ActionRefused, force_circuit
from monitors.circuits import shared_store
from monitors.circuits.stores import StoreUnavailable
from monitors.circuits.status import current_state, jobs_waiting, policy_of
from monitors.models import Circuit


class Command(BaseCommand):
    help = "Show every circuit breaker's state, or force one open or closed, or reset it."

    def add_arguments(self, parser):
        change = parser.add_mutually_exclusive_group()
        change.add_argument("--force-open", metavar="NAME", help="stop every call to this service; its jobs wait")
        change.add_argument("--force-closed", metavar="NAME", help="let every call through, whatever fails")
        change.add_argument("--reset", metavar="NAME", help="back to closed with counters cleared")
        parser.add_argument("--reason", default="", help="why, for the audit log")
        parser.add_argument("--user", help="the Django user acting (needs monitors.force_circuit); required for a change")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, **options):
        for flag, change in (("force_open", "open"), ("force_closed", "close"), ("reset", "reset")):
            if options[flag]:
                return self.change(options[flag], change, options)
        return self.show(options["json"])

    def change(self, name, change, options):
        if not options["user"]:
            raise CommandError("say who is acting: --user USERNAME (a Django user with monitors.force_circuit)")
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no Django user {options['user']!r}")
        try:
            state = force_circuit(user, name, change, reason=options["reason"], surface="command", dry_run=options["dry_run"])
        except (ActionRefused, LookupError, StoreUnavailable) as error:
            raise CommandError(str(error)) from error
        verb = "would change" if options["dry_run"] else "is now"
        self.stdout.write(f"{name} {verb}: {state.state.replace('_', ' ')}" if not options["dry_run"]
                          else f"{name} is {state.state.replace('_', ' ')}; --{change.replace('close', 'force-closed').replace('open', 'force-open')} {verb} it")

    def show(self, as_json):
        rows = []
        store = shared_store()
        for circuit in Circuit.objects.order_by("name"):
            state, source = current_state(circuit, store)
            policy = policy_of(circuit)
            now = timezone.now()
            calls, failures = state.window_counts(policy, now)
            rows.append({
                "name": circuit.name, "state": state.state, "source": source,
                "cool_down_left": round(state.cool_down_left(policy, now), 1),
                "consecutive_failures": state.consecutive_failures, "window_calls": calls, "window_failures": failures,
                "times_opened": state.open_count, "last_error": state.last_error[:200], "forced_by": state.forced_by,
                "jobs_waiting": jobs_waiting(circuit.name)["count"],
            })
        if as_json:
            self.stdout.write(json.dumps({"circuits": rows}, indent=2))
            return
        if not rows:
            self.stdout.write("No circuits yet: they appear once a process has called through one.")
            return
        for row in rows:
            extra = f", {row['cool_down_left']:.0f} s of cool-down left" if row["cool_down_left"] else ""
            self.stdout.write(
                f"{row['name']:<30} {row['state'].replace('_', ' '):<14} {row['window_failures']}/{row['window_calls']} failed "
                f"in the window, {row['jobs_waiting']} jobs waiting{extra}"
                + (f" — forced by {row['forced_by']}" if row["forced_by"] else "")
                + (f" — last error: {row['last_error']}" if row["state"] != "closed" and row["last_error"] else "")
            )

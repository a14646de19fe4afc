"""List every periodic task (beat entry): its schedule in words, last run, next expected run
(overdue marked) and success rate — what the Periodic tasks page shows, for a terminal or a
script; --run sends one now, --enable/--disable switch a django-celery-beat entry (all audited)."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from monitors.actions import ActionRefused, NotSwitchable, run_periodic_now, set_periodic_enabled
from monitors.periodic.status import all_statuses


class Command(BaseCommand):
    help = "Show every periodic task (beat entry): schedule, last run, next expected run, success rate."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument("--run", metavar="ENTRY", help="send this entry's task now, outside its schedule (audited)")
        switch = parser.add_mutually_exclusive_group()
        switch.add_argument("--enable", metavar="ENTRY", help="enable this django-celery-beat entry (audited)")
        switch.add_argument("--disable", metavar="ENTRY", help="disable this django-celery-beat entry (audited)")
        parser.add_argument("--user", help="the staff user the change is done as (needs monitors.run_periodic_tasks for "
                                           "--run, monitors.switch_periodic_tasks for --enable/--disable)")
        parser.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")

    def handle(self, **options):
        if options.get("run"):
            return self.run_now(options["run"], options.get("user"), options.get("dry_run", False))
        if options.get("enable") or options.get("disable"):
            return self.switch(options.get("enable") or options["disable"], bool(options.get("enable")),
                               options.get("user"), options.get("dry_run", False))
        statuses = all_statuses()
        if options.get("json"):
            self.stdout.write(json.dumps(statuses, indent=2, default=str))
            return
        if not statuses:
            self.stdout.write("No periodic task: the Celery app's beat_schedule is empty.")
            return
        self.stdout.write(f"{'entry':<32} {'schedule':<32} {'last run':<30} {'next expected':<28} succeeded")
        for status in statuses:
            last = status["last_run"]
            last_text = f"{last['state']} {last['enqueued_at']:%Y-%m-%d %H:%M:%S}" if last else "never recorded"
            expected = status["next_expected"]
            if not status["enabled"]:
                next_text = "disabled"
            elif not status["runs_in_beat"]:
                next_text = "not run by beat's scheduler"
            elif expected is None:
                next_text = "–"
            else:
                next_text = ("OVERDUE since " if status["overdue"] else "") + f"{expected:%Y-%m-%d %H:%M:%S}"
            rate = f"{status['success_rate']} %" if status["success_rate"] is not None else "–"
            self.stdout.write(f"{status['name'][:32]:<32} {status['schedule'][:32]:<32} {last_text:<30} {next_text:<28} {rate}")

    def run_now(self, name, username, dry_run):
        user = acting_user(username, "--run")
        try:
            result = run_periodic_now(user, name, surface="command", dry_run=dry_run)
        except ActionRefused as refused:
            raise CommandError(str(refused)) from refused
        except LookupError as error:
            raise CommandError(str(error)) from error
        parameters = result.log.parameters
        where = f"queue {parameters['queue']}" if parameters["queue"] else "its task's queue"
        if dry_run:
            self.stdout.write(f"Would send {parameters['task']} to {where} (audit log #{result.log.pk}).")
        else:
            self.stdout.write(f"Sent {parameters['task']} to {where} as job {parameters['task_id']} (audit log #{result.log.pk}).")

    def switch(self, name, enabled, username, dry_run):
        verb = "enable" if enabled else "disable"
        user = acting_user(username, f"--{verb}")
        try:
            result = set_periodic_enabled(user, name, enabled, surface="command", dry_run=dry_run)
        except ActionRefused as refused:
            raise CommandError(str(refused)) from refused
        except (LookupError, NotSwitchable) as error:
            raise CommandError(str(error)) from error
        was = "enabled" if result.log.parameters["was_enabled"] else "disabled"
        if dry_run:
            self.stdout.write(f"Would {verb} {name} (now {was}) (audit log #{result.log.pk}).")
        else:
            self.stdout.write(f"{name} is {verb}d (was {was}) (audit log #{result.log.pk}).")


def acting_user(username, flag):
    if not username:
        raise CommandError(f"{flag} needs --user: the change is audited as that user")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"no user {username!r}")
    return user

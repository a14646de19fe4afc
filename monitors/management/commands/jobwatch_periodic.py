"""List every periodic task (beat entry): its schedule in words, last run, next expected run
(overdue marked) and success rate — what the Periodic tasks page shows, for a terminal or a
script."""

import json

from django.core.management.base import BaseCommand

from monitors.periodic.status import all_statuses


class Command(BaseCommand):
    help = "Show every periodic task (beat entry): schedule, last run, next expected run, success rate."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def handle(self, **options):
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

"""The audit log: recent actions, or one action's progress and outcome."""

import json

from django.core.management.base import BaseCommand, CommandError

from monitors.models import ActionLog

FIELDS = ["id", "at", "finished_at", "username", "surface", "action", "target", "dry_run", "outcome", "matched",
          "succeeded", "failed", "error"]


class Command(BaseCommand):
    help = "Show the audit log (newest first), or one entry with --id."

    def add_arguments(self, parser):
        parser.add_argument("--id", type=int, help="one entry, with its parameters")
        parser.add_argument("--limit", type=int, default=20)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        if options["id"] is not None:
            entry = ActionLog.objects.filter(pk=options["id"]).values(*FIELDS, "parameters").first()
            if entry is None:
                raise CommandError(f"no audit log entry {options['id']}")
            entries = [entry]
        else:
            entries = list(ActionLog.objects.order_by("-at").values(*FIELDS)[: options["limit"]])
        if options["json"]:
            self.stdout.write(json.dumps(entries, default=str, indent=2))
            return
        for entry in entries:
            counts = f"{entry['matched']} matched, {entry['succeeded']} succeeded, {entry['failed']} failed"
            self.stdout.write(f"#{entry['id']} {entry['at']:%Y-%m-%d %H:%M:%S} {entry['username'] or '-'} ({entry['surface']}) "
                              f"{entry['action']} {entry['target']}: {entry['outcome']}{' (dry run)' if entry['dry_run'] else ''}; {counts}"
                              + (f"; {entry['error']}" if entry["error"] else ""))

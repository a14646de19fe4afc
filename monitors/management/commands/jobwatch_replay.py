"""Replay recorded jobs: one, several, everything matching a filter, or a finding's jobs."""

from django.core.management.base import BaseCommand, CommandError

from monitors.actions import ActionRefused, TooLarge, replay_jobs
from monitors.management.operator import (
    acting_user, add_confirmation_arguments, add_job_selection_arguments, add_user_argument, confirmed, job_selection,
    report,
)


class Command(BaseCommand):
    help = ("Re-enqueue jobs with their original arguments, queue and priority under new task ids that link back "
            "(replay_of). Filters combine: --task shop.charge --state failed --since 2h.")

    def add_arguments(self, parser):
        add_job_selection_arguments(parser)
        parser.add_argument("--force", action="store_true", help="replay even jobs whose referenced record is gone")
        parser.add_argument("--request-key", help="the same key twice replays each job once (for scripts that retry)")
        add_confirmation_arguments(parser, background=True)
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = acting_user(options["user"])
        selection = job_selection(options)
        common = {"force": options["force"], "surface": "command", "request_key": options["request_key"]}
        try:
            preview = replay_jobs(user, selection, dry_run=True, **common)
            self.stdout.write(f"{preview.matched} jobs match.")
            for verdict in preview.sample:
                status = "replay" if verdict.allowed else f"refused: {verdict.refusal}"
                self.stdout.write(f"  {verdict.task_name}[{verdict.task_id}] → {status}")
            if options["dry_run"] or not preview.matched:
                return
            if not confirmed(self, f"Replay {preview.matched} jobs?", options):
                return
            result = replay_jobs(user, selection, allow_large=options["allow_large"],
                                  run_here=not options["background"], **common)
        except (ActionRefused, TooLarge) as error:
            raise CommandError(str(error)) from error
        report(self, result, "Replayed")

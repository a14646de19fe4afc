"""Cancel jobs that have not finished: one, several, everything matching a filter, or a finding's jobs."""

from django.core.management.base import BaseCommand, CommandError

from monitors.actions import ActionRefused, TooLarge, cancel_jobs
from monitors.management.operator import (
    acting_user, add_confirmation_arguments, add_job_selection_arguments, add_user_argument, confirmed, job_selection,
    report,
)


class Command(BaseCommand):
    help = ("Cancel jobs: those waiting in a queue are taken off it (archived: jobwatch_restore brings them back), "
            "those a worker holds are revoked, running ones are terminated with --terminate (SIGTERM, then SIGKILL "
            "after CANCEL_GRACE_SECONDS). Filters combine: --task shop.sync --queue crm --state enqueued.")

    def add_arguments(self, parser):
        add_job_selection_arguments(parser)
        parser.add_argument("--terminate", action="store_true", help="terminate running jobs too (their work may be half done)")
        parser.add_argument("--reason", default="", help="why (the audit log and each job's page show it)")
        add_confirmation_arguments(parser)
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = acting_user(options["user"])
        selection = job_selection(options)
        common = {"terminate": options["terminate"], "reason": options["reason"], "surface": "command"}
        try:
            preview = cancel_jobs(user, selection, dry_run=True, **common)
            plan = preview.log.parameters["plan"]
            self.stdout.write(f"{preview.matched} jobs to cancel: {plan['queued']} waiting in a queue (taken off it, "
                              f"archived), {plan['held']} held by a worker (revoked), {plan['running']} running (terminated).")
            if preview.warning:
                self.stdout.write(preview.warning)
            for job in preview.sample:
                self.stdout.write(f"  {job.task_name}[{job.task_id}] {job.state} in {job.queue or '?'}")
            if options["dry_run"] or not preview.matched:
                return
            if not confirmed(self, f"Cancel {preview.matched} jobs?", options):
                return
            result = cancel_jobs(user, selection, allow_large=options["allow_large"], **common)
        except (ActionRefused, TooLarge) as error:
            raise CommandError(str(error)) from error
        report(self, result, "Cancelled")

"""Purge messages from a broker queue, each archived first (jobwatch_restore puts them back)."""

from django.core.management.base import BaseCommand, CommandError

from monitors.actions import ActionRefused, TooLarge, purge_messages
from monitors.brokers import BrokerUnavailable, PeekUnavailable
from monitors.management.operator import acting_user, add_confirmation_arguments, add_user_argument, confirmed, report
from monitors.actions.purge import MessageSelection
from monitors.actions.selection import BadSelection, JobSelection


class Command(BaseCommand):
    help = "Remove messages from a queue: all, one task's, given task ids, a finding's jobs, or picked messages."

    def add_arguments(self, parser):
        parser.add_argument("--queue", required=True)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="every message of the queue")
        which.add_argument("--task", help="the messages of this task")
        which.add_argument("--id", action="append", dest="ids", metavar="TASK_ID", help="a message's task id (repeatable)")
        which.add_argument("--finding", type=int, help="the jobs a finding names (e.g. its orphans)")
        which.add_argument("--key", action="append", dest="keys", help="a message's key from the peek view (repeatable)")
        parser.add_argument("--limit", type=int, help="stop after this many")
        add_confirmation_arguments(parser, background=True)
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = acting_user(options["user"])
        try:
            task_ids = set(options["ids"] or [])
            if options["finding"] is not None:
                task_ids = set(JobSelection.from_finding(options["finding"]).ids)
            selection = MessageSelection(everything=options["all"], task=options["task"] or "", task_ids=task_ids,
                                         keys=set(options["keys"] or []))
        except (BadSelection, ValueError) as error:
            raise CommandError(str(error)) from error
        common = {"surface": "command", "limit": options["limit"]}
        try:
            preview = purge_messages(user, options["queue"], selection, dry_run=True, **common)
            counted = "" if preview.complete_count else " (among the messages that could be looked at)"
            self.stdout.write(f"{preview.matched} messages match in {options['queue']}{counted}.")
            if preview.warning:
                self.stdout.write(preview.warning)
            for message in preview.sample:
                self.stdout.write(f"  {message.task_name or '(undecodable)'}[{message.task_id}] {message.problem}")
            if options["dry_run"] or (preview.complete_count and not preview.matched):
                return
            if not confirmed(self, f"Archive and remove {preview.matched} messages from {options['queue']}?", options):
                return
            result = purge_messages(user, options["queue"], selection, allow_large=options["allow_large"],
                                  run_here=not options["background"], **common)
        except (ActionRefused, TooLarge, BrokerUnavailable, PeekUnavailable) as error:
            raise CommandError(str(error)) from error
        report(self, result, "Purged (archived, then removed)")

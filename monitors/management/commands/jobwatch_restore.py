"""Put archived messages back on their queues."""

from django.core.management.base import BaseCommand, CommandError

from monitors.actions import ActionRefused, restore_messages
from monitors.brokers import BrokerUnavailable
from monitors.management.operator import acting_user, add_confirmation_arguments, add_user_argument, confirmed, report
from monitors.models import ArchivedMessage


class Command(BaseCommand):
    help = "Restore archived messages: by archive id, or everything one purge (its audit log entry) archived."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--id", action="append", type=int, dest="ids", metavar="ARCHIVE_ID", help="repeatable")
        which.add_argument("--action", type=int, help="everything the purge with this audit log id archived")
        add_confirmation_arguments(parser)
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = acting_user(options["user"])
        ids = options["ids"] or list(ArchivedMessage.objects.filter(action_id=options["action"]).values_list("pk", flat=True))
        if not ids:
            raise CommandError("no archived messages match")
        try:
            preview = restore_messages(user, ids, dry_run=True, surface="command")
            self.stdout.write(f"{preview.matched} of {len(ids)} archived messages can be restored "
                              "(the others are restored already, or were never removed from their queue).")
            if options["dry_run"] or not preview.matched:
                return
            if not confirmed(self, f"Restore {preview.matched} messages?", options):
                return
            result = restore_messages(user, ids, surface="command")
        except (ActionRefused, BrokerUnavailable) as error:
            raise CommandError(str(error)) from error
        report(self, result, "Restored")

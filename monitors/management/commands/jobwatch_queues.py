"""Print the queue table (read live from the broker), or the messages at the head of a queue."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from monitors.brokers import BrokerUnavailable, PeekUnavailable, open_broker
from monitors.queues import snapshot
from monitors.templatetags.jobwatch import duration as seconds


def count(value):
    return "-" if value is None else str(value)


class Command(BaseCommand):
    help = "Show every queue: depth (per priority), in flight, consumers, oldest job's age, rates and time to drain."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument("--peek", metavar="QUEUE", help="show the messages at the head of QUEUE instead")
        parser.add_argument("--limit", type=int, default=20, help="messages to show with --peek (default 20)")
        parser.add_argument("--no-workers", action="store_true", help="do not ask the workers which queues they consume")

    def handle(self, **options):
        if options["peek"]:
            return self.peek(options["peek"], options["limit"], options["json"])
        rows = snapshot(ask_workers=not options["no_workers"])
        if options["json"]:
            self.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2, default=str))
            return
        if rows and rows[0].error:
            self.stderr.write(f"Broker unavailable: {rows[0].error} (showing what the job history knows)")
        self.stdout.write(f"{'queue':<30} {'depth':>8} {'in flight':>9} {'consumers':>9} {'oldest':>7} {'in/min':>7} {'out/min':>7}  drain")
        for row in rows:
            drain = seconds(row.time_to_drain) if row.time_to_drain is not None else row.trend
            levels = " ".join(f"p{level}:{n}" for level, n in sorted(row.depth_by_priority.items())) if len(row.depth_by_priority) > 1 else ""
            self.stdout.write(
                f"{row.name[:30]:<30} {count(row.depth):>8} {count(row.in_flight):>9} {count(row.consumers):>9} "
                f"{seconds(row.oldest_age):>7} {row.arrivals_per_minute or 0:>7.0f} {row.drains_per_minute or 0:>7.0f}  {drain} {levels}"
            )

    def peek(self, queue, limit, as_json):
        try:
            broker = open_broker()
        except BrokerUnavailable as error:
            raise CommandError(str(error)) from None
        try:
            if broker.peek_warning and not as_json:
                self.stderr.write(f"Note: {broker.peek_warning}")
            messages = broker.peek(queue, 0, limit)
        except (BrokerUnavailable, PeekUnavailable) as error:
            raise CommandError(str(error)) from None
        finally:
            broker.close()
        now = timezone.now()
        if as_json:
            fields = ["position", "task_id", "task_name", "args", "kwargs", "eta", "retries", "priority",
                      "redelivered", "size", "content_type", "decodable", "problem"]
            data = [{**{name: getattr(m, name) for name in fields}, "age_seconds": m.age_seconds(now)} for m in messages]
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        for message in messages:
            what = f"{message.task_name}({message.args}, {message.kwargs})" if message.decodable else f"undecodable: {message.problem}"
            self.stdout.write(
                f"{message.position:>5} {message.task_id[:36]:<36} {seconds(message.age_seconds(now)):>6} "
                f"{message.size:>8}B {what[:200]}"
            )

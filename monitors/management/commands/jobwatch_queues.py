"""Print the queue table (read live from the broker), or the messages at the head of a queue; pause
or resume a queue on every worker (audited, as the acting --user, who needs monitors.pause_queues)."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from monitors.actions import ActionRefused, pause_queue, resume_queue
from monitors.brokers import BrokerUnavailable, PeekUnavailable, open_broker
from monitors.management.operator import acting_user
from monitors.pausing import mark_paused
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
        parser.add_argument("--pause", metavar="QUEUE", help="stop every worker consuming QUEUE until it is resumed")
        parser.add_argument("--resume", metavar="QUEUE", help="let the workers a pause stopped consume QUEUE again")
        parser.add_argument("--reason", default="", help="why, with --pause (the audit log and the queue's page show it)")
        parser.add_argument("--user", help="the Django user acting, with --pause/--resume; needs monitors.pause_queues")

    def handle(self, **options):
        if options["pause"] or options["resume"]:
            return self.pause_or_resume(options)
        if options["peek"]:
            return self.peek(options["peek"], options["limit"], options["json"])
        rows = mark_paused(snapshot(ask_workers=not options["no_workers"]))
        if options["json"]:
            self.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2, default=str))
            return
        if rows and rows[0].error:
            self.stderr.write(f"Broker unavailable: {rows[0].error} (showing what the job history knows)")
        self.stdout.write(f"{'queue':<30} {'depth':>8} {'in flight':>9} {'consumers':>9} {'oldest':>7} {'in/min':>7} {'out/min':>7}  drain")
        for row in rows:
            drain = seconds(row.time_to_drain) if row.time_to_drain is not None else row.trend
            if row.pause is not None:
                drain = f"PAUSED by {row.pause.paused_by or '?'} since {row.pause.paused_at:%Y-%m-%d %H:%M}"
            levels = " ".join(f"p{level}:{n}" for level, n in sorted(row.depth_by_priority.items())) if len(row.depth_by_priority) > 1 else ""
            self.stdout.write(
                f"{row.name[:30]:<30} {count(row.depth):>8} {count(row.in_flight):>9} {count(row.consumers):>9} "
                f"{seconds(row.oldest_age):>7} {row.arrivals_per_minute or 0:>7.0f} {row.drains_per_minute or 0:>7.0f}  {drain} {levels}"
            )

    def pause_or_resume(self, options):
        if options["pause"] and options["resume"]:
            raise CommandError("--pause or --resume, not both")
        if not options["user"]:
            raise CommandError("say who is acting: --user USERNAME (the audit log records it)")
        user = acting_user(options["user"])
        try:
            if options["pause"]:
                result = pause_queue(user, options["pause"], reason=options["reason"], surface="command")
                verb, queue = "paused", options["pause"]
            else:
                result = resume_queue(user, options["resume"], surface="command")
                verb, queue = "resumed", options["resume"]
        except ActionRefused as error:
            raise CommandError(str(error)) from None
        except ValueError as error:
            raise CommandError(str(error)) from None
        if result.warning:
            self.stderr.write(result.warning)
            return
        workers = result.log.parameters.get("workers") or []
        told = f"{len(workers)} running worker(s) answered at once: {', '.join(workers)}" if workers else (
            "no running worker answered the broadcast; each checks within QUEUE_PAUSE_CHECK_SECONDS")
        self.stdout.write(f"{queue} {verb} (audit log #{result.log.pk}); {told}")

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

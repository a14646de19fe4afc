"""Drive the demo shop at a steady pace, with trouble on demand (see demo/workload.py)."""

import random
import signal
import threading
import time
from collections import Counter

from celery.signals import after_task_publish
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from demo.gateway import OUTAGE_MODES, set_gateway_up
from demo.workload import STORM_FACTOR, Shop, TroublePlan, action_mix, actions_per_second

REPORT_EVERY = 10.0
# A run that falls further behind its schedule than this gives up the missed actions instead of
# bursting to catch up: a slow database should not turn into a storm nobody asked for.
MOST_BEHIND = 1.0
# The loop wakes at least this often, so storms and outages switch on time.
LONGEST_SLEEP = 0.25
# Without a duration, trouble repeats on this cycle.
DEFAULT_CYCLE = 180.0
OUTCOMES = [
    "customers created", "visits", "orders placed", "orders rolled back", "orders deleted after commit", "bulk loops",
]


class Tally:
    """What the run did: actions by outcome, customers saved in bulk, jobs published, errors."""

    def __init__(self):
        self.outcomes = Counter()
        self.errors = Counter()
        self.bulk_customers_saved = 0
        self.jobs_published = 0

    def count_published_job(self, **signal_kwargs):
        self.jobs_published += 1

    def actions(self):
        return sum(self.outcomes.values())

    def copy(self):
        copied = Tally()
        copied.outcomes, copied.errors = Counter(self.outcomes), Counter(self.errors)
        copied.bulk_customers_saved, copied.jobs_published = self.bulk_customers_saved, self.jobs_published
        return copied


class Command(BaseCommand):
    help = (
        "Drive the demo shop at about --rate actions per second for --duration seconds: sign-ups, "
        "visits (a save of last_seen_at that sets off three receivers) and orders (an Order and a "
        "Payment in one transaction). Trouble on demand: --storm, --rollbacks, --deletions, "
        "--gateway-outage, --bulk. Prints a line every 10 s and a summary at the end."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=5.0, help="actions per second in normal times (default 5)")
        parser.add_argument(
            "--duration", type=float, default=60.0, help="seconds to run; 0 runs until Ctrl-C or SIGTERM (default 60)"
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="seed of the random choices, to repeat a run (default: new, printed)"
        )
        parser.add_argument(
            "--storm", type=float, default=0.0, metavar="SECONDS",
            help=f"a callback fan-out storm this long: visits at {STORM_FACTOR}x their normal rate, "
                 "starting a third of the way into the run (or into each --cycle)",
        )
        parser.add_argument(
            "--rollbacks", type=float, default=0.0, metavar="FRACTION",
            help="share of order transactions that roll back after the Order is saved (orphaned inventory jobs)",
        )
        parser.add_argument(
            "--deletions", type=float, default=0.0, metavar="FRACTION",
            help="share of committed orders deleted straight after the commit, before their jobs run",
        )
        parser.add_argument(
            "--gateway-outage", type=float, default=0.0, metavar="SECONDS",
            help="take the payment gateway at settings.DEMO_GATEWAY_URL down this long, half way into the run "
                 "(or into each --cycle)",
        )
        parser.add_argument(
            "--outage-mode", choices=sorted(OUTAGE_MODES), default=None,
            help="how the gateway fails during the outage: refuse, drop or hang (default: the gateway's own setting)",
        )
        parser.add_argument(
            "--bulk", type=int, default=0, metavar="N",
            help="every --bulk-every seconds, one transaction saves N customers in a loop",
        )
        parser.add_argument(
            "--bulk-every", type=float, default=30.0, metavar="SECONDS",
            help="seconds between bulk loops, the first after half of it (default 30)",
        )
        parser.add_argument(
            "--cycle", type=float, default=None, metavar="SECONDS",
            help=f"trouble repeats every this many seconds (default: the duration, or {DEFAULT_CYCLE:g} s if it is 0)",
        )

    def handle(self, **options):
        check_options(options)
        seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)
        cycle = options["cycle"] or options["duration"] or DEFAULT_CYCLE
        run = WorkloadRun(self, options, seed, TroublePlan(cycle, options["storm"], options["gateway_outage"]))
        stop_requested = threading.Event()
        previous_handlers = {signum: signal.signal(signum, lambda *_: stop_requested.set())
                             for signum in (signal.SIGINT, signal.SIGTERM)}
        after_task_publish.connect(run.tally.count_published_job, weak=False)
        try:
            run.run(stop_requested)
        finally:
            after_task_publish.disconnect(run.tally.count_published_job)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)

    def say(self, message):
        self.stdout.write(f"{timezone.now():%H:%M:%S} {message}")
        self.stdout.flush()


def check_options(options):
    if options["rate"] <= 0:
        raise CommandError("--rate must be above 0.")
    for name in ("duration", "storm", "gateway_outage", "bulk"):
        if options[name] < 0:
            raise CommandError(f"--{name.replace('_', '-')} cannot be negative.")
    for name in ("rollbacks", "deletions"):
        if not 0 <= options[name] <= 1:
            raise CommandError(f"--{name} is a fraction between 0 and 1.")
    if options["bulk_every"] <= 0 or (options["cycle"] is not None and options["cycle"] <= 0):
        raise CommandError("--bulk-every and --cycle must be above 0.")


class WorkloadRun:
    """One run: a loop that does the next action when it is due, switches the trouble on and off
    on the plan's schedule, and reports."""

    def __init__(self, command, options, seed, plan):
        self.command = command
        self.options = options
        self.seed = seed
        self.plan = plan
        # Two streams: which action comes next must not depend on what the shop's picks consumed
        # (picking among more customers draws more bits), so a seed repeats the same actions
        # whatever the database already holds.
        self.rng = random.Random(seed)
        self.shop = Shop(random.Random(f"{seed}:shop"))
        self.tally = Tally()
        self.errors_reported = set()
        self.storming = False
        self.gateway_taken_down = False

    def run(self, stop_requested):
        options = self.options
        self.say_plan()
        started = time.monotonic()
        next_action_at = started
        next_report_at = started + REPORT_EVERY
        next_bulk_at = started + options["bulk_every"] / 2
        last_report = (started, self.tally.copy())
        while not stop_requested.is_set():
            now = time.monotonic()
            elapsed = now - started
            if options["duration"] and elapsed >= options["duration"]:
                break
            self.switch_storm(elapsed)
            self.switch_gateway(elapsed)
            if options["bulk"] and now >= next_bulk_at:
                self.attempt("running a bulk loop", self.bulk_loop)
                next_bulk_at += options["bulk_every"]
            if now >= next_report_at:
                last_report = self.report_progress(elapsed, last_report)
                next_report_at += REPORT_EVERY
            if now >= next_action_at:
                self.attempt_next_action()
                pace = actions_per_second(options["rate"], self.storming)
                next_action_at = max(next_action_at + 1 / pace, now - MOST_BEHIND)
            stop_requested.wait(min(next_action_at - time.monotonic(), LONGEST_SLEEP))
        self.end_trouble()
        self.report_totals(time.monotonic() - started)

    def attempt_next_action(self):
        mix = action_mix(self.storming)
        action = self.rng.choices(list(mix), weights=list(mix.values()))[0]
        if action == "create customer":
            self.attempt("creating a customer", self.shop.create_customer)
        elif action == "visit":
            self.attempt("recording a visit", self.shop.record_visit)
        elif action == "ship order":
            self.attempt("shipping an order", self.shop.ship_order)
        else:
            roll_back = self.rng.random() < self.options["rollbacks"]
            delete = not roll_back and self.rng.random() < self.options["deletions"]
            self.attempt("placing an order", lambda: self.shop.place_order(roll_back, delete))

    def bulk_loop(self):
        self.tally.bulk_customers_saved += self.shop.retier_customers(self.options["bulk"])
        return "bulk loops"

    def attempt(self, doing, action):
        """Run one action; an error (the database locked for a moment, the broker's folder gone)
        is counted and reported once per kind, and the run carries on."""
        try:
            outcome = action()
        except Exception as error:
            kind = f"{doing}: {type(error).__name__}"
            self.tally.errors[kind] += 1
            if kind not in self.errors_reported:
                self.errors_reported.add(kind)
                self.say(f"error while {doing}: {error!r} (more like it are counted, not shown)")
            return
        self.tally.outcomes[outcome] += 1

    def switch_storm(self, elapsed):
        storming = self.plan.storming(elapsed)
        if storming != self.storming:
            self.storming = storming
            if storming:
                self.say(f"storm begins: visits at {STORM_FACTOR}x their rate for {self.plan.storm_length:.0f} s")
            else:
                self.say("storm over: visits back to their normal rate")

    def switch_gateway(self, elapsed):
        should_be_down = self.plan.gateway_down(elapsed)
        if should_be_down != self.gateway_taken_down:
            self.gateway_taken_down = should_be_down
            self.tell_gateway(up=not should_be_down)

    def tell_gateway(self, up):
        url = settings.DEMO_GATEWAY_URL
        try:
            if up:
                set_gateway_up(url, True)
            else:
                # With its length, so the gateway comes back even if this run dies mid-outage.
                set_gateway_up(url, False, seconds=self.plan.outage_length, outage_mode=self.options["outage_mode"])
        except OSError as error:
            self.tally.errors["switching the gateway"] += 1
            consequence = "it comes back by itself when the outage's length is over" if up else "no outage this time"
            self.say(f"could not switch the gateway at {url} {'up' if up else 'down'} ({error}): {consequence}")
            return
        if up:
            self.say(f"gateway outage over: told {url} to come back up")
        else:
            self.say(f"gateway outage begins: told {url} to go down for {self.plan.outage_length:.0f} s")

    def end_trouble(self):
        """Leave no outage behind: a run stopped mid-outage brings the gateway back up."""
        if self.gateway_taken_down:
            self.gateway_taken_down = False
            self.tell_gateway(up=True)

    def say_plan(self):
        options, plan = self.options, self.plan
        length = f"for {options['duration']:g} s" if options["duration"] else "until Ctrl-C"
        trouble = []
        if plan.storm_length:
            trouble.append(f"a {plan.storm_length:.0f} s storm at {plan.storm_starts:.0f} s")
        if plan.outage_length:
            trouble.append(f"a {plan.outage_length:.0f} s gateway outage at {plan.outage_starts:.0f} s")
        if trouble and not options["duration"]:
            trouble.append(f"repeating every {plan.cycle:g} s")
        if options["rollbacks"] or options["deletions"]:
            trouble.append(
                f"{options['rollbacks']:.0%} of orders rolled back, {options['deletions']:.0%} deleted after commit"
            )
        if options["bulk"]:
            trouble.append(f"a bulk loop of {options['bulk']} customer saves every {options['bulk_every']:g} s")
        self.say(
            f"demo workload: about {options['rate']:g} actions/s {length}, seed {self.seed}"
            + (f"; trouble: {'; '.join(trouble)}" if trouble else "; no trouble")
        )

    def report_progress(self, elapsed, last_report):
        last_at, last = last_report
        now = time.monotonic()
        actions = self.tally.actions() - last.actions()
        changed = ", ".join(
            f"{name} {self.tally.outcomes[name] - last.outcomes[name]}"
            for name in OUTCOMES if self.tally.outcomes[name] != last.outcomes[name]
        )
        errors = sum(self.tally.errors.values()) - sum(last.errors.values())
        flags = (" [storm]" if self.storming else "") + (" [gateway down]" if self.gateway_taken_down else "")
        self.say(
            f"[{elapsed:5.0f} s] {actions} actions ({actions / (now - last_at):.1f}/s): {changed or 'none'}; "
            f"jobs published {self.tally.jobs_published - last.jobs_published}; errors {errors}{flags}"
        )
        return now, self.tally.copy()

    def report_totals(self, elapsed):
        tally = self.tally
        lines = [f"demo workload finished after {elapsed:.0f} s (seed {self.seed}): {tally.actions()} actions"]
        lines += [f"  {name:<28}{tally.outcomes[name]:>8}" for name in OUTCOMES]
        lines.append(f"  {'customers saved in bulk':<28}{tally.bulk_customers_saved:>8}")
        lines.append(f"  {'jobs published':<28}{tally.jobs_published:>8}")
        lines.append(f"  {'errors':<28}{sum(tally.errors.values()):>8}")
        lines += [f"    {kind}: {count}" for kind, count in sorted(tally.errors.items())]
        self.say("\n".join(lines))

    def say(self, message):
        self.command.say(message)

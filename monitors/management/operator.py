"""What the changing management commands share: who is acting (a Django user, so that the
permission check and the audit log are the same as on the web), the job filter as options, and
the confirmation step."""

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from monitors.actions.selection import FILTER_KEYS, BadSelection, JobSelection


def add_user_argument(parser):
    parser.add_argument("--user", required=True, help="the Django user acting; needs the action's permission")


def acting_user(username):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"no Django user {username!r}")
    return user


def add_job_selection_arguments(parser):
    for key, meaning in FILTER_KEYS.items():
        parser.add_argument(f"--{key}", help=meaning)
    parser.add_argument("--id", action="append", default=[], dest="ids", metavar="TASK_ID", help="a job's task id (repeatable)")
    parser.add_argument("--finding", type=int, help="the jobs a finding names (e.g. its orphans)")


def job_selection(options):
    try:
        if options["ids"]:
            return JobSelection.from_ids(options["ids"])
        if options["finding"] is not None:
            return JobSelection.from_finding(options["finding"])
        return JobSelection.from_filter({key: options.get(key) for key in FILTER_KEYS})
    except BadSelection as error:
        raise CommandError(str(error)) from error


def add_confirmation_arguments(parser, background=False):
    if background:
        parser.add_argument("--background", action="store_true",
                            help="hand a large set to a worker (jobwatch.run_action) instead of running it here")
    parser.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
    parser.add_argument("--yes", action="store_true", help="go ahead without asking")
    parser.add_argument("--allow-large", action="store_true", help="go ahead even beyond the ACTION_MAX_ITEMS cap")


def confirmed(command, question, options):
    """After the preview: go ahead? --yes says so; otherwise ask on a terminal, refuse elsewhere."""
    if options["yes"]:
        return True
    if not sys.stdin.isatty():
        raise CommandError("not a terminal to ask on: add --yes to go ahead (or --dry-run to look only)")
    answer = input(f"{question} Type yes to go ahead: ")
    if answer.strip().lower() != "yes":
        command.stdout.write("Nothing changed.")
        return False
    return True


def report(command, result, done):
    log = result.log
    if result.background:
        command.stdout.write(f"{result.matched} items: running in the background as action {log.pk} "
                             f"(manage.py jobwatch_actions --id {log.pk} shows its progress)")
        return
    command.stdout.write(f"{done}: {log.succeeded} succeeded, {log.failed} failed (audit log entry {log.pk})")
    for refusal in (log.parameters or {}).get("refused", [])[:20]:
        command.stdout.write(f"  refused {refusal['task_id']}: {refusal['reason']}")
    if log.error:
        command.stdout.write(f"  {log.error}")

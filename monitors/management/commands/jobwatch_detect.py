"""Run the detectors now and print the open findings."""

import json

from django.core.management.base import BaseCommand, CommandError

from monitors.detectors import DETECTORS, run_detectors
from monitors.models import Finding


class Command(BaseCommand):
    help = "Run Jobwatch's detectors (fan-out, orphans, backlog) now, update the findings and print the open ones."

    def add_arguments(self, parser):
        parser.add_argument("--detector", action="append", choices=sorted(DETECTORS),
                            help="run only this detector (repeatable); default: all")
        parser.add_argument("--json", action="store_true", help="print the open findings as JSON")

    def handle(self, **options):
        try:
            outcomes = run_detectors(options["detector"])
        except KeyError as error:
            raise CommandError(str(error)) from None
        names = options["detector"] or list(DETECTORS)
        failed = [name for name in names if name not in outcomes]
        findings = Finding.objects.filter(status=Finding.Status.OPEN, detector__in=names).order_by("-severity", "kind", "subject")
        if options["json"]:
            self.stdout.write(json.dumps([
                {"kind": f.kind, "subject": f.subject, "severity": f.severity, "title": f.title,
                 "explanation": f.explanation, "evidence": f.evidence, "count": f.count,
                 "first_seen": f.first_seen.isoformat(), "last_seen": f.last_seen.isoformat()}
                for f in findings
            ], indent=2, default=str))
        else:
            for name, outcome in outcomes.items():
                self.stdout.write(f"{name}: {len(outcome.opened)} opened, {len(outcome.updated)} updated, {len(outcome.resolved)} resolved")
            for finding in findings:
                self.stdout.write(f"[{finding.severity:<8}] {finding.title}")
            if not findings:
                self.stdout.write("No open findings.")
        if failed:
            raise CommandError(f"detector(s) failed: {', '.join(failed)} (see the log)")

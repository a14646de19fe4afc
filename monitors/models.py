"""Jobwatch's tables.

`JobExecution` is the durable record of every job's life, one row per Celery task id, written by
the recorder (monitors/recording/) from publish and worker signals. `RecorderProcess` holds each
recording process's counters so an operator can see what the recorder lost, and why.
"""

from django.db import models


class JobState(models.TextChoices):
    ENQUEUED = "enqueued"
    RECEIVED = "received"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REVOKED = "revoked"
    REJECTED = "rejected"


class OriginKind(models.TextChoices):
    SAVE = "save", "model save"
    DELETE = "delete", "model delete"
    SIGNAL = "signal", "other signal"
    TASK = "task", "another task"
    REQUEST = "request", "HTTP request"
    BEAT = "beat", "celery beat"
    OTHER = "other", "other code"


class Deferral(models.TextChoices):
    NONE = "", "not deferred"
    ON_COMMIT = "on_commit", "transaction.on_commit"
    DELAY_ON_COMMIT = "delay_on_commit", "delay_on_commit"


class JobExecution(models.Model):
    """One job's life from enqueue to its last attempt.

    Events for the same job arrive from several processes (the publisher, the worker's main
    process, the pool child) in any order. `progress` orders them without trusting clocks:
    retries * 4 + stage, where stage is 0 enqueued, 1 received, 2 started, 3 finished. The
    recorder's upsert lets a newer event overwrite what it knows, and keeps first-seen facts
    (args, origin) from the first event that carried them.
    """

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices)
    progress = models.PositiveIntegerField(default=0, help_text="retries * 4 + stage; orders events")

    # Routing, as published.
    queue = models.CharField(max_length=255, blank=True)
    exchange = models.CharField(max_length=255, blank=True)
    routing_key = models.CharField(max_length=255, blank=True)
    priority = models.SmallIntegerField(null=True, blank=True)

    # Arguments, redacted and truncated (see monitors/recording/payload.py).
    args = models.JSONField(null=True, blank=True)
    kwargs = models.JSONField(null=True, blank=True)
    payload_size = models.PositiveIntegerField(null=True, blank=True, help_text="bytes of args+kwargs as JSON, before truncation")
    payload_complete = models.BooleanField(null=True, help_text="False when a value was redacted or truncated")
    payload_hash = models.CharField(max_length=16, blank=True, help_text="of the full args+kwargs: equal calls, equal hash")

    eta = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)

    enqueued_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runtime = models.FloatField(null=True, blank=True, help_text="seconds of the last attempt")

    worker = models.CharField(max_length=255, blank=True, help_text="worker hostname")
    worker_pid = models.IntegerField(null=True, blank=True)

    exception_type = models.CharField(max_length=255, blank=True)
    error_progress = models.PositiveIntegerField(null=True, blank=True, help_text="progress of the event that set the error")
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result = models.TextField(blank=True, help_text="repr of the return value, truncated")

    parent_id = models.CharField(max_length=255, blank=True)
    root_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    replay_of = models.CharField(max_length=255, blank=True, help_text="task id this job replays")

    # Origin: what caused the enqueue (monitors/recording/origin.py).
    origin_kind = models.CharField(max_length=16, choices=OriginKind.choices, blank=True)
    origin_model = models.CharField(max_length=255, blank=True, help_text="app_label.Model saved or deleted")
    origin_pk = models.CharField(max_length=255, blank=True)
    origin_save = models.CharField(max_length=32, blank=True, help_text="one id per save: its receivers' jobs share it")
    origin_created = models.BooleanField(null=True)
    origin_update_fields = models.JSONField(null=True, blank=True)
    origin_receiver = models.CharField(max_length=255, blank=True, help_text="receiver or function that enqueued")
    origin_in_atomic = models.BooleanField(null=True, help_text="enqueued (or deferred) inside an atomic block")
    origin_deferred = models.CharField(max_length=16, choices=Deferral.choices, blank=True)
    origin_transaction = models.CharField(max_length=32, blank=True, help_text="id of the outermost atomic block")
    origin_committed_at = models.DateTimeField(null=True, blank=True, help_text="when that transaction committed")
    origin_request = models.CharField(max_length=300, blank=True, help_text="METHOD /path")
    origin_request_id = models.CharField(max_length=32, blank=True)
    origin_task = models.CharField(max_length=255, blank=True, help_text="name of the task that enqueued")

    references = models.JSONField(null=True, blank=True, help_text='[{"arg", "model", "pk"}] records the job needs')

    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            # Jobs list filtered by state and the failure-rate window: state = X and enqueued_at > T.
            models.Index(fields=["state", "enqueued_at"], name="jobwatch_state_time"),
            # Per-task views and per-task failure rates: task_name = X and enqueued_at > T.
            models.Index(fields=["task_name", "enqueued_at"], name="jobwatch_task_time"),
            # Queue page and arrival rates: queue = X and enqueued_at > T.
            models.Index(fields=["queue", "enqueued_at"], name="jobwatch_queue_time"),
            # Fan-out detector: enqueues grouped by origin (model, receiver) within a window.
            models.Index(fields=["origin_model", "origin_receiver", "enqueued_at"], name="jobwatch_origin_time"),
            # Windowed scans with no other filter (overview charts, bulk-loop grouping, pruning).
            models.Index(fields=["enqueued_at"], name="jobwatch_enqueued"),
            # Throughput and drain rate: jobs finished within a window.
            models.Index(fields=["finished_at"], name="jobwatch_finished"),
            # Jobs still waiting, per queue, oldest first: the oldest job's age where a message
            # carries no publish time, and orphan checks of jobs not yet run. Partial, so it
            # holds only the waiting jobs, however long the history.
            models.Index(
                fields=["queue", "enqueued_at"], name="jobwatch_waiting", condition=models.Q(state="enqueued")
            ),
        ]

    def __str__(self):
        return f"{self.task_name or '?'}[{self.task_id}] {self.state}"


class RecorderProcess(models.Model):
    """Counters of one recording process (a worker child, a web server, beat, a script).

    Counts are cumulative for the life of the process and written with each flush, so they reach
    the database as soon as it is reachable again after an outage.
    """

    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    process_started_at = models.DateTimeField()
    program = models.CharField(max_length=255, blank=True, help_text="command line, shortened")
    events_recorded = models.BigIntegerField(default=0)
    events_dropped_overflow = models.BigIntegerField(default=0, help_text="lost because the buffer was full")
    events_dropped_error = models.BigIntegerField(default=0, help_text="lost because they could not be written")
    write_errors = models.BigIntegerField(default=0, help_text="failed flushes (events kept for retry when transient)")
    capture_errors = models.BigIntegerField(default=0, help_text="events that could not be built from a signal")
    last_error = models.TextField(blank=True)
    last_flush_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hostname", "pid", "process_started_at"], name="jobwatch_recorder_process"),
        ]
        indexes = [
            # Recorder totals for a window and pruning of processes long gone.
            models.Index(fields=["last_flush_at"], name="jobwatch_recorder_flush"),
        ]

    def __str__(self):
        return f"{self.hostname}:{self.pid}"

    @property
    def events_dropped(self):
        return self.events_dropped_overflow + self.events_dropped_error


class QueueSample(models.Model):
    """One queue at one moment, written by the periodic sampler so that no page has to ask the
    broker: every viewer reads samples. Raw samples (every ~15 s) are rolled up into 10-minute
    ones after a couple of days (monitors/sampling.py), which keeps a year of history small."""

    queue = models.CharField(max_length=255)
    sampled_at = models.DateTimeField()
    resolution = models.PositiveIntegerField(default=0, help_text="seconds one sample stands for; 0 = raw")
    broker = models.CharField(max_length=16, blank=True)
    depth = models.BigIntegerField(null=True, help_text="messages waiting; the largest in a rolled-up sample")
    depth_by_priority = models.JSONField(null=True, blank=True)
    in_flight = models.BigIntegerField(null=True)
    scheduled = models.BigIntegerField(null=True, help_text="in flight, waiting inside a worker for their eta")
    consumers = models.IntegerField(null=True)
    workers = models.JSONField(null=True, blank=True, help_text="worker hostnames consuming this queue")
    oldest_age = models.FloatField(null=True, help_text="seconds the oldest waiting job has waited")
    arrivals_per_minute = models.FloatField(null=True)
    drains_per_minute = models.FloatField(null=True)
    exists_on_broker = models.BooleanField(default=True)
    error = models.TextField(blank=True, help_text="why the broker could not be read")

    class Meta:
        constraints = [
            # Samplers running on several workers at once write the same bucket once. Its index
            # also serves a queue's chart and latest sample: queue = X and sampled_at > T.
            models.UniqueConstraint(fields=["queue", "sampled_at", "resolution"], name="jobwatch_one_sample"),
        ]
        indexes = [
            # The queue table (latest sample of every queue) and roll-up / pruning by age.
            models.Index(fields=["sampled_at"], name="jobwatch_sample_time"),
        ]

    def __str__(self):
        return f"{self.queue} @ {self.sampled_at:%H:%M:%S}: {self.depth}"


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Finding(models.Model):
    """One problem a detector found, from the moment it is seen until it is gone.

    Identified by a stable fingerprint (kind:subject): while a finding is open, each detector run
    that still sees the problem updates it; a run that no longer sees it resolves it. If it comes
    back later, that is a new finding (a new incident), and the old one stays in the history.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    fingerprint = models.CharField(max_length=400)
    detector = models.CharField(max_length=40, help_text="the detector that owns it")
    kind = models.CharField(max_length=40)
    subject = models.CharField(max_length=350)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=300)
    explanation = models.TextField(help_text="the likely cause and the usual fix")
    evidence = models.JSONField(default=dict)
    count = models.BigIntegerField(default=0, help_text="how many jobs, enqueues or messages the evidence counts")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # At most one open finding per problem, even with detectors running on several workers.
            models.UniqueConstraint(fields=["fingerprint"], condition=models.Q(status="open"), name="jobwatch_one_open_finding"),
        ]
        indexes = [
            # The findings page and alerts: open findings by severity, newest first.
            models.Index(fields=["status", "severity", "last_seen"], name="jobwatch_finding_status"),
            # A problem's history: every episode of one fingerprint.
            models.Index(fields=["fingerprint", "first_seen"], name="jobwatch_finding_history"),
        ]

    def __str__(self):
        return f"[{self.severity}] {self.title}"

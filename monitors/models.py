"""Jobwatch's tables.

`JobExecution` is the durable record of every job's life, one row per Celery task id, written by
the recorder (monitors/recording/) from publish and worker signals. `RecorderProcess` holds each
recording process's counters so an operator can see what the recorder lost, and why.
"""

from django.conf import settings
from django.db import models


class JobState(models.TextChoices):
    ENQUEUED = "enqueued"
    RECEIVED = "received"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    # Revoked by an operator (cancelled), expired, or terminated: the job's page says which.
    REVOKED = "revoked", "Cancelled (revoked)"
    REJECTED = "rejected"
    # Jobwatch's own: the job's service circuit is open and the job waits for the cool-down to
    # end (monitors/circuits). Not a failure, and not counted against its retries.
    WAITING = "waiting", "waiting on a circuit"
    # Jobwatch's own: an operator's purge took its message off the queue (archived; a restore puts
    # it back, and the job is enqueued again). It will not run unless restored.
    PURGED = "purged", "Purged"


# The states in which a job's message sits in a queue (or with a worker, for its eta): what a
# purge can take.
QUEUED_STATES = (JobState.ENQUEUED, JobState.RETRIED, JobState.WAITING)


class OriginKind(models.TextChoices):
    SAVE = "save", "model save"
    DELETE = "delete", "model delete"
    SIGNAL = "signal", "other signal"
    TASK = "task", "another task"
    REQUEST = "request", "HTTP request"
    BEAT = "beat", "celery beat"
    MANUAL = "manual", "a periodic task run by hand"
    OTHER = "other", "other code"


class Deferral(models.TextChoices):
    NONE = "", "not deferred"
    ON_COMMIT = "on_commit", "transaction.on_commit"
    DELAY_ON_COMMIT = "delay_on_commit", "delay_on_commit"


class JobExecution(models.Model):
    """One job's life from enqueue to its last attempt.

    Events for the same job arrive from several processes (the publisher, the worker's main
    process, the pool child) in any order. `progress` orders them without trusting clocks:
    attempt * 4 + stage, where attempt is retries + circuit waits (each a new run of the same task
    id) and stage is 0 enqueued, 1 received, 2 started, 3 finished. The
    recorder's upsert lets a newer event overwrite what it knows, and keeps first-seen facts
    (args, origin) from the first event that carried them.
    """

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices)
    progress = models.PositiveIntegerField(default=0, help_text="(retries + circuit waits) * 4 + stage; orders events")

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
    circuit = models.CharField(max_length=200, blank=True, help_text="the service circuit the job calls through or waits on")
    circuit_waits = models.PositiveIntegerField(default=0, help_text="times the job was put back to wait for an open circuit")

    enqueued_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runtime = models.FloatField(null=True, blank=True, help_text="seconds of the last attempt")

    worker = models.CharField(max_length=255, blank=True, help_text="worker hostname")
    worker_pid = models.IntegerField(null=True, blank=True)

    exception_type = models.CharField(max_length=255, blank=True)
    # The other side of a failure, read from the exception object, its __cause__/__context__ chain
    # and the frames it was raised through (monitors/recording/targets.py), never from its wording.
    error_target = models.CharField(max_length=255, blank=True, help_text="host:port of the service the failure came from")
    error_status = models.IntegerField(null=True, blank=True, help_text="the service's status code (HTTP, SMTP…)")
    error_kind = models.CharField(max_length=16, blank=True, help_text="http, connection, timeout, dns, tls, network")
    error_progress = models.PositiveIntegerField(null=True, blank=True, help_text="progress of the event that set the error")
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result = models.TextField(blank=True, help_text="repr of the return value, truncated")

    parent_id = models.CharField(max_length=255, blank=True)
    root_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    replay_of = models.CharField(max_length=255, blank=True, help_text="task id this job replays")
    discarded_at = models.DateTimeField(null=True, blank=True, help_text="hidden from the history by an operator (reversible)")
    # An operator's cancel (monitors/actions/cancel.py): who, when, why. The recorder never writes
    # these (its INSERT names its own columns: hence the database defaults); the state says what
    # became of the job (revoked, or enqueued again once restored).
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=150, blank=True, default="", db_default="")
    cancel_reason = models.CharField(max_length=300, blank=True, default="", db_default="")

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
    # The beat schedule entry that sent the job (celery beat's own schedule or django-celery-beat's
    # PeriodicTask): an entry's runs are one indexed query. A database default, like the cancel
    # fields: the recorder's INSERT names its own columns.
    origin_entry = models.CharField(max_length=200, blank=True, default="", db_default="",
                                    help_text="the periodic task (beat entry) that sent it")

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
            # Jobs waiting behind a circuit (the circuit detector and tile): partial, so it holds
            # only the jobs waiting now.
            models.Index(
                fields=["circuit", "enqueued_at"], name="jobwatch_circuit_waiting", condition=models.Q(state="waiting")
            ),
            # A job's replays: replay_of = X (the chain on the job page, and idempotent replays).
            models.Index(fields=["replay_of"], name="jobwatch_replay_of", condition=~models.Q(replay_of="")),
            # A job's children (the chain on the job page): parent_id = X.
            models.Index(fields=["parent_id"], name="jobwatch_parent", condition=~models.Q(parent_id="")),
            # The newest failures (the failures page's examples, the jobs list filtered to failed
            # jobs, of any task or one): partial, so it holds only failed jobs.
            models.Index(fields=["id"], name="jobwatch_failed", condition=models.Q(state="failed")),
            # The jobs one save enqueued (a job's origin, the fan-out page's offending saves).
            models.Index(fields=["origin_save"], name="jobwatch_origin_save", condition=~models.Q(origin_save="")),
            # A periodic task's runs, newest first (its page, the periodic detector): partial,
            # only the jobs beat sent.
            models.Index(fields=["origin_entry", "enqueued_at"], name="jobwatch_periodic_runs",
                         condition=~models.Q(origin_entry="")),
            # What each worker runs now (Workers page): partial, only jobs running or reserved.
            models.Index(fields=["worker", "started_at"], name="jobwatch_running",
                         condition=models.Q(state__in=["received", "started"])),
        ]
        permissions = [
            ("replay_jobs", "Can replay jobs (re-enqueue them under a new id)"),
            ("discard_jobs", "Can discard recorded failed jobs from the history"),
            ("cancel_jobs", "Can cancel jobs (queued ones taken off their queue, running ones terminated)"),
            ("run_periodic_tasks", "Can run a periodic task now, outside its schedule"),
            ("switch_periodic_tasks", "Can enable and disable django-celery-beat's periodic tasks"),
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
    node = models.CharField(max_length=255, blank=True, help_text="the Celery worker's node name (celery@host); empty outside workers")
    queues = models.JSONField(null=True, blank=True, help_text="queues the worker consumes")
    stopped_at = models.DateTimeField(null=True, blank=True, help_text="when the worker shut down cleanly")

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
    fix = models.CharField(max_length=300, blank=True, help_text="the usual fix, in one line")
    # What the finding is about, and what its evidence names: typed names such as "task:app.send",
    # "queue:emails", "service:api.example.com:443", "receiver:app.receivers.x", "saves:app.Order".
    # Findings that share one are evidence of the same problem (monitors/alerts/correlation.py).
    keys = models.JSONField(default=list, blank=True, help_text="what it is about")
    links = models.JSONField(default=list, blank=True, help_text="what its evidence names")
    incident = models.ForeignKey("Incident", null=True, blank=True, on_delete=models.SET_NULL, related_name="findings",
                                 help_text="the problem this finding is evidence of")

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

    def task_ids(self):
        """The jobs its evidence names (`job_ids`: a list, or lists by cause), each once, in order:
        what "replay / purge the jobs of this finding" acts on and what its page lists. The
        evidence's "sample_job_ids" are only examples and are not named here."""
        named = (self.evidence or {}).get("job_ids")
        groups = named.values() if isinstance(named, dict) else [named]
        ids = [str(item) for group in groups if isinstance(group, list) for item in group if item]
        return list(dict.fromkeys(ids))


class CircuitState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open", "half-open"
    FORCED_OPEN = "forced_open", "forced open"
    FORCED_CLOSED = "forced_closed", "forced closed"


class Circuit(models.Model):
    """One external service's circuit breaker (monitors/circuits), shared by every process.

    With the database store (the default) this row *is* the breaker's state, read and changed
    under a row lock by every worker. With the Redis store, Redis holds the state and this row is
    its copy as of the last transition, which keeps the history queryable when Redis is not.
    """

    name = models.CharField(max_length=200, unique=True, help_text="the service, e.g. payment-gateway")
    state = models.CharField(max_length=16, choices=CircuitState.choices, default=CircuitState.CLOSED)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="when it entered its current state")
    opened_at = models.DateTimeField(null=True, blank=True, help_text="when the current cool-down began")
    consecutive_failures = models.PositiveIntegerField(default=0)
    trial_successes = models.PositiveIntegerField(default=0, help_text="successful trial calls while half-open")
    trials = models.JSONField(default=list, blank=True, help_text="start times (epoch) of trial calls in progress")
    window = models.JSONField(default=list, blank=True, help_text="[[bucket start, calls, failures], …] of the rolling window")
    open_count = models.PositiveIntegerField(default=0, help_text="times it has opened")
    last_error_type = models.CharField(max_length=255, blank=True)
    last_error = models.TextField(blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    forced_by = models.CharField(max_length=255, blank=True, help_text="who forced it open or closed")
    policy = models.JSONField(default=dict, blank=True, help_text="thresholds and cool-down last used by a caller")
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("force_circuit", "Can force a circuit open or closed, or reset it")]

    def __str__(self):
        return f"{self.name} ({self.get_state_display()})"


class CircuitEvent(models.Model):
    """A circuit's transition: from which state to which, why, and who or what caused it."""

    circuit = models.CharField(max_length=200)
    at = models.DateTimeField()
    from_state = models.CharField(max_length=16, choices=CircuitState.choices)
    to_state = models.CharField(max_length=16, choices=CircuitState.choices)
    cause = models.CharField(max_length=500, help_text="e.g. 5 consecutive failures")
    actor = models.CharField(max_length=500, blank=True, help_text="the process and job, or the operator")
    consecutive_failures = models.PositiveIntegerField(default=0)
    window_calls = models.PositiveIntegerField(default=0)
    window_failures = models.PositiveIntegerField(default=0)
    error_type = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True, help_text="the last error when it changed")

    class Meta:
        indexes = [
            # A circuit's history and the flapping rule: circuit = X and at > T.
            models.Index(fields=["circuit", "at"], name="jobwatch_circuit_event"),
        ]

    def __str__(self):
        return f"{self.circuit}: {self.from_state} → {self.to_state}"


class ActionLog(models.Model):
    """The audit log: every change an operator asked for, allowed or refused, real or dry run.

    Written by monitors/actions/, the only code that changes anything; never editable in the
    admin or the dashboard.
    """

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUSED = "refused", "refused (no permission)"
        PREVIEWED = "previewed", "dry run"
        RUNNING = "running"

    at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True, help_text="kept when the user is deleted")
    surface = models.CharField(max_length=20, blank=True, help_text="dashboard, admin, command or api")
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=400, blank=True, help_text="what it acted on: a circuit, a queue, a filter")
    parameters = models.JSONField(default=dict, blank=True, help_text="the filter or ids, and options")
    dry_run = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    matched = models.BigIntegerField(null=True, blank=True)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The audit page, newest first, and one user's or one action's history.
            models.Index(fields=["at"], name="jobwatch_action_time"),
            models.Index(fields=["action", "at"], name="jobwatch_action_kind"),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '?'} {self.action} {self.target}"


class JobPayload(models.Model):
    """The full arguments of a failed job whose recorded arguments were redacted or truncated,
    kept so that it can be replayed exactly. They hold what the message held (secrets included),
    so they are kept only where replay needs them, and pruned with the archive."""

    task_id = models.CharField(max_length=255, unique=True)
    body = models.TextField(help_text="[args, kwargs] as JSON, exactly as the job received them")
    recorded_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["recorded_at"], name="jobwatch_payload_time")]  # pruning


class ReplayRecord(models.Model):
    """One job replayed by one request: the new task id is decided (and stored) before the
    enqueue, so that the same request submitted twice — a double click, a retried POST —
    enqueues once."""

    original_task_id = models.CharField(max_length=255)
    request_key = models.CharField(max_length=64, help_text="the idempotency key of the request")
    new_task_id = models.CharField(max_length=255, unique=True)
    action = models.ForeignKey(ActionLog, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True, help_text="when the broker accepted it; empty: not (yet) sent")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["original_task_id", "request_key"], name="jobwatch_one_replay_per_request"),
        ]


class QueuePause(models.Model):
    """A queue an operator paused: no worker consumes it until it is resumed. Workers running
    when it is paused stop at once (a broadcast) or at their next check; a worker started while it
    is paused never begins (monitors/pausing.py). Resuming deletes the row; the audit log keeps
    who paused and resumed it, when and why."""

    queue = models.CharField(max_length=255, unique=True)
    paused_at = models.DateTimeField()
    paused_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    action = models.ForeignKey(ActionLog, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        permissions = [("pause_queues", "Can pause and resume a queue on every worker")]

    def __str__(self):
        return f"{self.queue} (paused by {self.paused_by or '?'})"


class ArchivedMessage(models.Model):
    """A message taken out of a broker queue by a purge, exactly as the broker held it, so that it
    can be restored. Archived first, removed second: `removed_at` empty means the message was not
    (or not yet) removed — a purge that crashed in between, or a message a worker took first."""

    action = models.ForeignKey(ActionLog, null=True, on_delete=models.SET_NULL, related_name="archived_messages")
    archived_at = models.DateTimeField()
    broker = models.CharField(max_length=16)
    queue = models.CharField(max_length=255)
    priority = models.SmallIntegerField(null=True, blank=True, help_text="the priority level it sat in")
    task_id = models.CharField(max_length=255, blank=True)
    task_name = models.CharField(max_length=255, blank=True)
    raw = models.TextField(help_text="the message as the broker held it")
    raw_encoding = models.CharField(max_length=8, default="text", help_text="text, or base64 for bytes that are not UTF-8")
    size = models.PositiveIntegerField(default=0)
    removed_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    restored_at = models.DateTimeField(null=True, blank=True)
    restored_by = models.ForeignKey(ActionLog, null=True, blank=True, on_delete=models.SET_NULL, related_name="restored_messages")

    class Meta:
        indexes = [
            # The archive page (newest first, per queue) and pruning by age.
            models.Index(fields=["archived_at"], name="jobwatch_archive_time"),
            models.Index(fields=["queue", "archived_at"], name="jobwatch_archive_queue"),
            models.Index(fields=["task_id"], name="jobwatch_archive_task"),
        ]
        permissions = [
            ("purge_messages", "Can purge messages from broker queues (they are archived first)"),
            ("restore_messages", "Can restore archived messages to their queue"),
        ]

    def __str__(self):
        return f"{self.task_name or '?'}[{self.task_id}] from {self.queue}"


class MonitorHeartbeat(models.Model):
    """The last run of each of Jobwatch's periodic tasks: a monitor that stopped is itself a
    problem (the alert task and /healthz say so), not silence."""

    task = models.CharField(max_length=100, unique=True)
    first_run_at = models.DateTimeField(null=True, blank=True, help_text="since when this task has been running")
    last_run_at = models.DateTimeField()
    last_duration = models.FloatField(null=True, blank=True, help_text="seconds")
    last_error = models.TextField(blank=True)
    runs = models.BigIntegerField(default=0)
    # Beat's scheduler as it runs, often chosen on its command line (--scheduler), which no
    # other process can read: it says which periodic tasks beat sends.
    scheduler = models.CharField(max_length=200, blank=True, help_text="celery beat's: the scheduler class it runs")

    def __str__(self):
        return f"{self.task} @ {self.last_run_at:%H:%M:%S}"


class PeriodicTally(models.Model):
    """What /metrics says of each periodic task, kept by the periodic detector on each pass so a
    scrape reads one row per entry and survives history pruning: when it last succeeded and how
    many of its runs were missed, ever (a Prometheus counter: it only grows)."""

    entry = models.CharField(max_length=200, unique=True)
    last_success_at = models.DateTimeField(null=True, blank=True, help_text="when its last successful run finished")
    missed_runs_total = models.BigIntegerField(default=0)
    # The last missed due time in the total: each pass counts only the due times after it, so a
    # run discarded or pruned (the reckoning moves back) or two passes at once count nothing twice.
    counted_through = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    def __str__(self):
        return f"{self.entry}: {self.missed_runs_total} missed"


class NotificationChannel(models.Model):
    """Where notifications go: an email list, a JSON webhook, or a Slack-compatible webhook.
    Defined in the admin, or in settings (JOBWATCH["ALERT_CHANNELS"], kept in step)."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook", "JSON webhook"
        SLACK = "slack", "Slack-compatible webhook"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.TextField(help_text="email addresses (comma-separated), or the webhook URL")
    min_severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    enabled = models.BooleanField(default=True)
    from_settings = models.BooleanField(default=False, help_text="defined in settings; edits there win")
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="back-off after a failure")
    disabled_reason = models.TextField(blank=True, help_text="why Jobwatch turned it off")

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"


class Incident(models.Model):
    """One problem as people hear of it, with its findings as evidence: findings that share a
    cause (a task, a service, a queue, a receiver or a model's saves) are one incident
    (monitors/alerts/correlation.py). Notified once when it has held for a moment, again when it
    grows more severe, after the repeat interval while open (unless acknowledged or snoozed), and
    once when all its evidence is over (and has stayed over for a moment). A finding that comes
    back while its incident is still settling continues that incident: flapping is damped."""

    class State(models.TextChoices):
        PENDING = "pending", "holding before notifying"
        OPEN = "open"
        RESOLVING = "resolving", "holding before notifying the resolve"
        RESOLVED = "resolved"
        DISMISSED = "dismissed", "over before anyone was notified"
        MERGED = "merged", "found to be part of another incident"

    ACTIVE = (State.PENDING, State.OPEN, State.RESOLVING)

    fingerprint = models.CharField(max_length=400)
    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="incidents",
                                help_text="the lead finding: the likeliest cause, whose title and fix the incident shows")
    kind = models.CharField(max_length=40)
    subject = models.CharField(max_length=350)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    title = models.CharField(max_length=300)
    fix = models.CharField(max_length=300, blank=True)
    impact = models.BigIntegerField(default=0, help_text="jobs waiting, failed or orphaned: the largest its evidence counts")
    keys = models.JSONField(default=list, blank=True, help_text="the keys and links of its findings")
    last_seen = models.DateTimeField(null=True, blank=True)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    opened_at = models.DateTimeField()
    notified_at = models.DateTimeField(null=True, blank=True, help_text="when the first notification went out")
    last_notified_at = models.DateTimeField(null=True, blank=True)
    repeats = models.PositiveIntegerField(default=0)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One active incident per problem, however many alert tasks run at once.
            models.UniqueConstraint(fields=["fingerprint"], condition=models.Q(state__in=["pending", "open", "resolving"]),
                                    name="jobwatch_one_active_incident"),
        ]
        indexes = [models.Index(fields=["state", "opened_at"], name="jobwatch_incident_state")]
        permissions = [("acknowledge_incident", "Can acknowledge or snooze incidents")]

    def __str__(self):
        return f"[{self.state}] {self.title}"


class Notification(models.Model):
    """One message about one incident to one channel, and what became of it."""

    class Event(models.TextChoices):
        OPENED = "opened"
        ESCALATED = "escalated", "more severe"
        REPEAT = "repeat", "still open"
        RESOLVED = "resolved"
        TEST = "test"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        ABANDONED = "abandoned", "given up (channel disabled)"

    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=10, choices=Event.choices)
    sequence = models.PositiveIntegerField(default=0, help_text="which repeat")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="a sender is on it until then")
    payload = models.JSONField(default=dict)

    class Meta:
        constraints = [
            # Idempotent: the same notice is created once, whichever alert task gets there first.
            models.UniqueConstraint(fields=["incident", "channel", "event", "sequence"], name="jobwatch_one_notification"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="jobwatch_notification_status")]

    def __str__(self):
        return f"{self.event} → {self.channel}: {self.status}"


class TaskCounter(models.Model):
    """Prometheus counters of jobs, in celery-exporter's names and labels, kept by the recorder's
    writer (every batch adds its counts in the same transaction as its rows), so /metrics reads
    a few hundred rows instead of counting the execution table, and the totals survive restarts."""

    metric = models.CharField(max_length=40, help_text="sent, started, succeeded, failed, retried, revoked, rejected, runtime_…")
    name = models.CharField(max_length=255, help_text="task name")
    hostname = models.CharField(max_length=255)
    queue_name = models.CharField(max_length=255)
    exception = models.CharField(max_length=255, blank=True)
    le = models.CharField(max_length=16, blank=True, help_text="histogram bucket bound")
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["metric", "name", "hostname", "queue_name", "exception", "le"], name="jobwatch_one_counter"),
        ]


class JobTally(models.Model):
    """Jobs counted per minute, per task, queue and exception, kept by the recorder's writer from
    the same counts as TaskCounter. The dashboard's charts (throughput, failure rate, failures
    over time) read these: a day is at most 1,440 rows per task, whatever the size of the
    execution table."""

    minute = models.DateTimeField(help_text="start of the minute the recorder wrote the counts in")
    metric = models.CharField(max_length=40, help_text="sent, started, succeeded, failed, retried, revoked, rejected")
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255, blank=True)
    exception = models.CharField(max_length=255, blank=True)
    count = models.BigIntegerField(default=0)
    runtime_sum = models.FloatField(default=0, help_text="seconds, over the counted jobs that reported one")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "metric", "task_name", "queue", "exception"], name="jobwatch_one_tally"),
        ]
        indexes = [models.Index(fields=["metric", "minute"], name="jobwatch_tally_metric")]

    def __str__(self):
        return f"{self.minute:%H:%M} {self.metric} {self.task_name}: {self.count}"


class OriginTally(models.Model):
    """Jobs enqueued by each origin that a save, a delete or a signal set off (its model and
    receiver), per task, per minute and per hour, kept by the recorder's writer from the enqueue
    events. The Fan-out page reads these: a week is 168 hourly rows per origin and task, whatever
    the size of the execution table, and the minutes give a window's exact ends. Saves are counted
    where their first job was: each save once per receiver (`saves`) and once in all
    (`model_saves`), so that summing rows of one resolution over any window counts each save
    once (monitors/recording/origin_tally.py)."""

    start = models.DateTimeField(help_text="start of the minute or hour the recorder wrote the counts in")
    resolution = models.PositiveIntegerField(help_text="seconds the row stands for: 60 or 3600")
    origin_kind = models.CharField(max_length=16, help_text="save, delete or signal")
    origin_model = models.CharField(max_length=255, blank=True)
    origin_receiver = models.CharField(max_length=255)
    task_name = models.CharField(max_length=255)
    jobs = models.BigIntegerField(default=0)
    saved_jobs = models.BigIntegerField(default=0, help_text="of those, jobs a signal's receiver enqueued (they name the save)")
    saves = models.BigIntegerField(default=0, help_text="saves whose first job for this receiver is counted here")
    model_saves = models.BigIntegerField(default=0, help_text="saves whose first job of all is counted here")

    class Meta:
        constraints = [
            # Also the page's index: every origin's rows of one resolution over a window.
            models.UniqueConstraint(fields=["resolution", "start", "origin_kind", "origin_model", "origin_receiver", "task_name"],
                                    name="jobwatch_one_origin_tally"),
        ]

    def __str__(self):
        return f"{self.start:%H:%M} ({self.resolution} s) {self.origin_model} → {self.origin_receiver}: {self.jobs}"


class JobHistogram(models.Model):
    """How long jobs ran and waited, per task, as counts in fixed buckets (monitors/timing.py):
    one row per task, measure and bucket that saw a job, per minute (kept three days), per hour
    and per UTC day (kept as long as the history). The recorder's writer adds to them with every batch, so a
    task's percentiles over any window read a few hundred rows, whatever the size of the
    execution table."""

    class Measure(models.TextChoices):
        RUNTIME = "runtime", "runtime"  # started → finished, of jobs that succeeded or failed
        WAIT = "wait", "queue wait"  # published (or its eta) → started, of every delivery

    start = models.DateTimeField(help_text="start of the minute or hour the counts were written in")
    resolution = models.PositiveIntegerField(help_text="seconds the row stands for: 60, 3600 or 86400")
    task_name = models.CharField(max_length=255)
    measure = models.CharField(max_length=10, choices=Measure.choices)
    # A runtime's job succeeded or failed (so the Tasks page counts failures from these rows, and
    # a failure's runtime can be told from a success's); empty for a wait.
    outcome = models.CharField(max_length=10, blank=True, default="")
    upper_ms = models.BigIntegerField(help_text="the bucket's upper bound in milliseconds (timing.OVERFLOW_MS: no bound)")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0, help_text="seconds, summed over the counted jobs")

    class Meta:
        constraints = [
            # Also the task page's index: one task's rows of one resolution over a window. On
            # PostgreSQL its index carries count and total too (migration 0021), so that the page
            # reads them from the index alone.
            models.UniqueConstraint(fields=["task_name", "resolution", "start", "measure", "outcome", "upper_ms"],
                                    name="jobwatch_one_histogram_bucket"),
        ]
        indexes = [
            # Every task's rows over a window (the slowest tasks), read from the index alone: the
            # counts and the seconds they add up to. Key columns rather than INCLUDE, which SQLite
            # does not have.
            models.Index(fields=["resolution", "measure", "start", "task_name", "outcome", "upper_ms", "count", "total"],
                         name="jobwatch_histogram_times"),
        ]

    def __str__(self):
        return f"{self.start:%Y-%m-%d %H:%M} {self.task_name} {self.measure} ≤{self.upper_ms} ms: {self.count}"

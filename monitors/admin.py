"""Read-only admin for the recorded history: the recorder owns these rows, and every change goes
through monitors/actions/ (permission, audit log), never through an edit form."""

import uuid

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from monitors.actions import (
    ActionRefused, TooLarge, acknowledge_incident, allowed, cancel_jobs, discard_jobs, force_circuit, pause_queue, replay_jobs,
    restore_messages, resume_queue,
)
from monitors.actions.selection import JobSelection
from monitors.admin_search import search_jobs
from monitors.alerts.channels import send_test
from monitors.brokers import BrokerUnavailable
from monitors.circuits.stores import StoreUnavailable
from monitors.models import (
    ActionLog, ArchivedMessage, Circuit, CircuitEvent, Finding, Incident, JobExecution, MonitorHeartbeat, Notification,
    NotificationChannel, QueuePause, QueueSample, RecorderProcess,
)
from monitors.web.counting import AffordablePaginator


class ReadOnlyAdmin(admin.ModelAdmin):
    # These tables are the monitor's own and several grow with the jobs: each list is counted as
    # the dashboard counts (exact up to a cap, else an estimate), not row by row on every view.
    paginator = AffordablePaginator

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(JobExecution)
class JobExecutionAdmin(ReadOnlyAdmin):
    """The execution table, with replay and discard as admin actions: a confirmation page first
    (with the preview: how many, which would be refused and why), then monitors/actions/."""

    actions = ["replay", "replay_forced", "discard", "cancel", "cancel_terminating"]
    list_display = ["task_name", "state", "queue", "enqueued_at", "runtime", "origin_kind", "origin_model", "origin_receiver"]
    list_filter = ["state", "origin_kind", "origin_deferred", "origin_in_atomic"]
    # The search box is admin_search.search_jobs (each part of it on an index); Django only needs
    # a search field named to show the box.
    search_fields = ["task_id"]
    search_help_text = ("A task id; part of a task's name; text in the arguments or the error message; "
                        "part of the receiver or exception type (newest jobs)")
    # Sorting by any other column would sort the whole history for each page.
    sortable_by = ["enqueued_at"]
    date_hierarchy = None  # a date drill-down counts the whole table; too slow at millions of rows
    show_full_result_count = False  # "x of y" would count every row on each page view
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["task_id", "task_name", "state", "retries", "circuit", "circuit_waits", "queue", "exchange",
                           "routing_key", "priority"]}),
        ("Arguments", {"fields": ["args", "kwargs", "payload_size", "payload_complete", "references"]}),
        ("Timing", {"fields": ["eta", "expires", "enqueued_at", "received_at", "started_at", "finished_at", "runtime"]}),
        ("Worker and outcome", {"fields": ["worker", "worker_pid", "result", "exception_type", "exception_message", "traceback"]}),
        ("Origin", {"fields": [
            "origin_kind", "origin_model", "origin_pk", "origin_created", "origin_update_fields", "origin_receiver",
            "origin_in_atomic", "origin_deferred", "origin_transaction", "origin_committed_at",
            "origin_request", "origin_task",
        ]}),
        ("Lineage", {"fields": ["parent_id", "root_id", "group_id", "replay_of", "discarded_at"]}),
        ("Cancelled", {"fields": ["cancelled_at", "cancelled_by", "cancel_reason"]}),
    ]

    def get_search_results(self, request, queryset, search_term):
        jobs, notes = search_jobs(queryset, search_term)
        if search_term.strip():
            for note in notes:
                self.message_user(request, note, messages.INFO)
        return jobs, False

    def has_replay_jobs_permission(self, request):
        return allowed(request.user, "replay_jobs")

    def has_discard_jobs_permission(self, request):
        return allowed(request.user, "discard_jobs")

    def has_cancel_jobs_permission(self, request):
        return allowed(request.user, "cancel_jobs")

    @admin.action(description="Cancel selected jobs that have not started (taken off their queue, or revoked)",
                  permissions=["cancel_jobs"])
    def cancel(self, request, queryset):
        return self.cancel_selected(request, queryset, terminate=False)

    @admin.action(description="Cancel selected jobs, terminating the running ones (their work may be half done)",
                  permissions=["cancel_jobs"])
    def cancel_terminating(self, request, queryset):
        return self.cancel_selected(request, queryset, terminate=True)

    def cancel_selected(self, request, queryset, terminate):
        selection = JobSelection.from_ids(list(queryset.values_list("task_id", flat=True)[:100_001]))
        reason = request.POST.get("reason", "")[:300]
        if request.POST.get("confirmed") != "yes":
            preview = cancel_jobs(request.user, selection, terminate=terminate, dry_run=True, surface="admin")
            plan = preview.log.parameters["plan"]
            notes = [f"{plan['queued']} waiting in a queue: taken off it and archived (restorable)",
                     f"{plan['held']} held by a worker: revoked"]
            notes += [f"{plan['running']} running: terminated"] if terminate else ([preview.warning] if preview.warning else [])
            return confirmation_page(self, request, queryset, "cancel", list(queryset[:50]), count=preview.matched,
                                     notes=notes, reason_field=True)
        try:
            result = cancel_jobs(request.user, selection, reason=reason, terminate=terminate, surface="admin")
        except (ActionRefused, TooLarge) as error:
            self.message_user(request, str(error), messages.ERROR)
            return None
        self.message_user(request, outcome_message(result, "cancelled"), messages.SUCCESS)
        return None

    @admin.action(description="Replay selected jobs", permissions=["replay_jobs"])
    def replay(self, request, queryset):
        return self.replay_selected(request, queryset, force=False)

    @admin.action(description="Replay selected jobs, even those whose record is gone", permissions=["replay_jobs"])
    def replay_forced(self, request, queryset):
        return self.replay_selected(request, queryset, force=True)

    def replay_selected(self, request, queryset, force):
        selection = JobSelection.from_ids(list(queryset.values_list("task_id", flat=True)[:100_001]))
        if request.POST.get("confirmed") != "yes":
            preview = replay_jobs(request.user, selection, force=force, dry_run=True, surface="admin")
            refused = [verdict for verdict in preview.sample if not verdict.allowed]
            return confirmation_page(self, request, queryset, "replay", list(queryset[:50]), count=preview.matched,
                                     notes=[f"{v.task_name}[{v.task_id}] will be refused: {v.refusal}" for v in refused],
                                     request_key=new_request_key())
        try:
            result = replay_jobs(request.user, selection, force=force, surface="admin",
                                 request_key=request.POST.get("request_key") or None)
        except (ActionRefused, TooLarge) as error:
            self.message_user(request, str(error), messages.ERROR)
            return None
        self.message_user(request, outcome_message(result, "replayed"), messages.SUCCESS if not result.log.failed else messages.WARNING)
        return None

    @admin.action(description="Discard selected failed jobs from the history (reversible)", permissions=["discard_jobs"])
    def discard(self, request, queryset):
        selection = JobSelection.from_ids(list(queryset.values_list("task_id", flat=True)[:100_001]))
        if request.POST.get("confirmed") != "yes":
            preview = discard_jobs(request.user, selection, dry_run=True, surface="admin")
            return confirmation_page(self, request, queryset, "discard", list(queryset[:50]), count=preview.matched,
                                     notes=["Only failed jobs are discarded; the others are left as they are."])
        result = discard_jobs(request.user, selection, surface="admin")
        self.message_user(request, outcome_message(result, "discarded"), messages.SUCCESS)
        return None


@admin.register(RecorderProcess)
class RecorderProcessAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "pid", "program", "events_recorded", "events_dropped_overflow",
                    "events_dropped_error", "write_errors", "last_flush_at"]
    ordering = ["-last_flush_at"]


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ["title", "severity", "status", "kind", "count", "first_seen", "last_seen", "resolved_at"]
    list_filter = ["status", "severity", "kind", "detector"]
    search_fields = ["subject", "title"]
    ordering = ["-last_seen"]


@admin.register(QueueSample)
class QueueSampleAdmin(ReadOnlyAdmin):
    list_display = ["queue", "sampled_at", "depth", "in_flight", "consumers", "oldest_age", "arrivals_per_minute", "drains_per_minute"]
    list_filter = ["queue", "resolution"]
    ordering = ["-sampled_at"]
    show_full_result_count = False


@admin.register(Circuit)
class CircuitAdmin(ReadOnlyAdmin):
    """Circuits, with the operator's three changes as admin actions (confirmation page first,
    audited through monitors/actions/, each needing monitors.force_circuit)."""

    list_display = ["name", "state", "changed_at", "consecutive_failures", "open_count", "last_error_type", "forced_by"]
    list_filter = ["state"]
    search_fields = ["name"]
    ordering = ["name"]
    actions = ["force_open", "force_closed", "reset"]

    def has_force_circuit_permission(self, request):
        return allowed(request.user, "force_circuit")

    @admin.action(description="Force selected circuits open (jobs wait, nothing calls the service)", permissions=["force_circuit"])
    def force_open(self, request, queryset):
        return self.change_circuits(request, queryset, "open", "force open")

    @admin.action(description="Force selected circuits closed (every call goes through)", permissions=["force_circuit"])
    def force_closed(self, request, queryset):
        return self.change_circuits(request, queryset, "close", "force closed")

    @admin.action(description="Reset selected circuits (closed, counters cleared)", permissions=["force_circuit"])
    def reset(self, request, queryset):
        return self.change_circuits(request, queryset, "reset", "reset")

    def change_circuits(self, request, queryset, change, verb):
        circuits = list(queryset)
        if request.POST.get("confirmed") != "yes":
            return confirmation_page(self, request, queryset, verb, circuits, reason_field=True)
        reason = request.POST.get("reason", "")[:300]
        for circuit in circuits:
            try:
                force_circuit(request.user, circuit.name, change, reason=reason, surface="admin")
            except (ActionRefused, LookupError, StoreUnavailable) as error:
                self.message_user(request, f"{circuit.name}: {error}", messages.ERROR)
                continue
            self.message_user(request, f"{circuit.name}: {verb} done (in the audit log).", messages.SUCCESS)
        return None


@admin.register(QueuePause)
class QueuePauseAdmin(admin.ModelAdmin):
    """Paused queues. "Add" pauses one on every worker and "Resume" (confirmation first) lets
    the workers take it again — both through monitors/actions/queues.py, audited, each needing
    monitors.pause_queues. A pause is never edited: resume it and pause it again."""

    list_display = ["queue", "paused_by", "paused_at", "reason", "action"]
    fields = ["queue", "reason"]
    search_fields = ["queue"]
    ordering = ["queue"]
    actions = ["resume"]

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff  # as on the dashboard: every staff user sees them

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_add_permission(self, request):
        return allowed(request.user, "pause_queue")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_pause_queues_permission(self, request):
        return allowed(request.user, "resume_queue")

    def save_model(self, request, obj, form, change):
        try:
            pause_queue(request.user, obj.queue, reason=obj.reason, surface="admin")
        except (ActionRefused, ValueError) as error:
            self.message_user(request, f"{obj.queue}: {error}", messages.ERROR)
        paused = QueuePause.objects.filter(queue=obj.queue).first()
        obj.pk = paused.pk if paused else None  # the row the action wrote, for the admin's own log line

    def log_addition(self, request, obj, message):
        if obj.pk is not None:
            super().log_addition(request, obj, message)

    @admin.action(description="Resume the selected queues (every worker a pause stopped takes them again)",
                  permissions=["pause_queues"])
    def resume(self, request, queryset):
        pauses = list(queryset)
        if request.POST.get("confirmed") != "yes":
            return confirmation_page(self, request, queryset, "resume", pauses)
        for pause in pauses:
            try:
                resume_queue(request.user, pause.queue, surface="admin")
            except ActionRefused as error:
                self.message_user(request, f"{pause.queue}: {error}", messages.ERROR)
                continue
            self.message_user(request, f"{pause.queue}: resumed (in the audit log).", messages.SUCCESS)
        return None


@admin.register(ArchivedMessage)
class ArchivedMessageAdmin(ReadOnlyAdmin):
    """What purges took out of the queues; restore puts messages back (confirmation first)."""

    actions = ["restore"]
    list_display = ["archived_at", "queue", "task_name", "task_id", "size", "removed_at", "restored_at", "action", "note"]
    list_filter = ["queue", "broker"]
    search_fields = ["=task_id", "task_name"]
    ordering = ["-archived_at"]
    show_full_result_count = False

    def has_restore_messages_permission(self, request):
        return allowed(request.user, "restore_messages")

    @admin.action(description="Restore selected messages to their queues", permissions=["restore_messages"])
    def restore(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[:100_001])
        if request.POST.get("confirmed") != "yes":
            preview = restore_messages(request.user, ids, dry_run=True, surface="admin")
            return confirmation_page(self, request, queryset, "restore", list(queryset[:50]), count=preview.matched,
                                     notes=["Messages restored already, or never removed from their queue, are skipped."])
        try:
            result = restore_messages(request.user, ids, surface="admin")
        except (ActionRefused, BrokerUnavailable) as error:
            self.message_user(request, str(error), messages.ERROR)
            return None
        self.message_user(request, outcome_message(result, "restored"), messages.SUCCESS)
        return None


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    """Channels are configuration: editable here (or defined in settings), with a "send test"."""

    list_display = ["name", "kind", "target", "min_severity", "enabled", "consecutive_failures", "last_success_at",
                    "disabled_reason"]
    readonly_fields = ["from_settings", "consecutive_failures", "last_error", "last_failure_at", "last_success_at",
                       "next_attempt_at", "disabled_reason"]
    actions = ["send_test"]

    @admin.action(description="Send a test notification to the selected channels", permissions=["change"])
    def send_test(self, request, queryset):
        for channel in queryset:
            try:
                send_test(channel)
            except Exception as error:
                self.message_user(request, f"{channel.name}: the test failed: {type(error).__name__}: {error}", messages.ERROR)
                continue
            self.message_user(request, f"{channel.name}: test sent.", messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        if obj.enabled:  # turning a channel back on starts it afresh
            obj.disabled_reason, obj.consecutive_failures, obj.next_attempt_at = "", 0, None
        super().save_model(request, obj, form, change)


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["title", "severity", "state", "impact", "opened_at", "notified_at", "repeats", "resolved_at", "acknowledged_by",
                    "snoozed_until", "merged_into"]
    list_filter = ["state", "severity", "kind"]
    ordering = ["-opened_at"]
    actions = ["acknowledge", "snooze_hour"]

    def has_acknowledge_incident_permission(self, request):
        return allowed(request.user, "acknowledge_incident")

    @admin.action(description="Acknowledge (no more repeats)", permissions=["acknowledge_incident"])
    def acknowledge(self, request, queryset):
        for incident in queryset:
            acknowledge_incident(request.user, incident.pk, surface="admin")
        self.message_user(request, f"{queryset.count()} acknowledged (in the audit log).", messages.SUCCESS)

    @admin.action(description="Snooze repeats for an hour", permissions=["acknowledge_incident"])
    def snooze_hour(self, request, queryset):
        for incident in queryset:
            acknowledge_incident(request.user, incident.pk, snooze_seconds=3600, surface="admin")
        self.message_user(request, f"{queryset.count()} snoozed for an hour (in the audit log).", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "event", "channel", "incident", "status", "attempts", "sent_at", "last_error"]
    list_filter = ["status", "event", "channel"]
    ordering = ["-created_at"]


@admin.register(MonitorHeartbeat)
class MonitorHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["task", "last_run_at", "last_duration", "runs", "last_error"]


@admin.register(CircuitEvent)
class CircuitEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "circuit", "from_state", "to_state", "cause", "actor", "error_type"]
    list_filter = ["to_state", "circuit"]
    ordering = ["-at"]
    show_full_result_count = False


@admin.register(ActionLog)
class ActionLogAdmin(ReadOnlyAdmin):
    """The audit log: readable by staff with the view permission, never editable."""

    list_display = ["at", "username", "surface", "action", "target", "dry_run", "outcome", "matched", "succeeded", "failed"]
    list_filter = ["action", "outcome", "surface", "dry_run"]
    search_fields = ["username", "target"]
    ordering = ["-at"]
    show_full_result_count = False


def new_request_key():
    return uuid.uuid4().hex


def outcome_message(result, verb):
    log = result.log
    if result.background:
        return f"{result.matched} items are being {verb} in the background (audit log entry {log.pk})."
    text = f"{log.succeeded} {verb}, {log.failed} not (audit log entry {log.pk})."
    refused = (log.parameters or {}).get("refused") or []
    if refused:
        text += " Refused: " + "; ".join(f"{item['task_id']}: {item['reason']}" for item in refused[:5])
    return text


def confirmation_page(model_admin, request, queryset, verb, objects, reason_field=False, count=None, notes=(),
                      request_key=""):
    """The page between picking an admin action and doing it, as delete_selected has: it lists
    what will change and posts the same selection back with confirmed=yes. The count is the
    action's own preview (the changelist's selection may hold more than the page shows)."""
    count = len(objects) if count is None else count
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Are you sure you want to {verb} {count} {model_admin.opts.verbose_name_plural}?",
        "count": count,
        "notes": notes,
        "request_key": request_key,
        "verb": verb,
        "objects": objects,
        "opts": model_admin.opts,
        "action": request.POST.get("action"),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "select_across": request.POST.get("select_across", "0"),
        "reason_field": reason_field,
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/monitors/confirm_action.html", context)

"""Read-only admin for the recorded history: the recorder owns these rows, and changes to jobs
go through monitors/actions.py (audited), never through an edit form."""

from django.contrib import admin

from monitors.models import Finding, JobExecution, QueueSample, RecorderProcess


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(JobExecution)
class JobExecutionAdmin(ReadOnlyAdmin):
    list_display = ["task_name", "state", "queue", "enqueued_at", "runtime", "origin_kind", "origin_model", "origin_receiver"]
    list_filter = ["state", "origin_kind", "origin_deferred", "origin_in_atomic"]
    search_fields = ["=task_id", "task_name", "origin_receiver", "exception_type"]
    date_hierarchy = None  # a date drill-down counts the whole table; too slow at millions of rows
    show_full_result_count = False  # "x of y" would count every row on each page view
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["task_id", "task_name", "state", "retries", "queue", "exchange", "routing_key", "priority"]}),
        ("Arguments", {"fields": ["args", "kwargs", "payload_size", "payload_complete", "references"]}),
        ("Timing", {"fields": ["eta", "expires", "enqueued_at", "received_at", "started_at", "finished_at", "runtime"]}),
        ("Worker and outcome", {"fields": ["worker", "worker_pid", "result", "exception_type", "exception_message", "traceback"]}),
        ("Origin", {"fields": [
            "origin_kind", "origin_model", "origin_pk", "origin_created", "origin_update_fields", "origin_receiver",
            "origin_in_atomic", "origin_deferred", "origin_transaction", "origin_committed_at",
            "origin_request", "origin_task",
        ]}),
        ("Lineage", {"fields": ["parent_id", "root_id", "group_id", "replay_of"]}),
    ]


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

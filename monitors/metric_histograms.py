"""The two Prometheus histograms the recorder counts into TaskCounter — celery-exporter's
celery_task_runtime and celery_task_queue_wait_time — and how their rows are named.

Their bounds are settings (METRICS_RUNTIME_BUCKETS, METRICS_QUEUE_WAIT_BUCKETS: celery-exporter's
--buckets and --queue-wait-buckets). A histogram's buckets must be one fixed list for all its
counts, so every stored row carries a fingerprint of the list it was counted with
("queue_wait_bucket@1a2b3c4d"), and /metrics shows the rows of the list set now: a change of the
setting starts the histogram from zero — what Prometheus reads as a counter reset — instead of
mixing two lists into buckets that are no longer cumulative. A web process and a worker with
different lists each count their own; /metrics shows the web process's."""

import hashlib

from monitors.conf import setting

# kind → (metric name, help, the setting with its bounds)
HISTOGRAMS = {
    "runtime": ("celery_task_runtime", "Histogram of task runtime measurements.", "METRICS_RUNTIME_BUCKETS"),
    "queue_wait": ("celery_task_queue_wait_time",
                   "Histogram of task queue wait time measurements (published, or its eta, to started).",
                   "METRICS_QUEUE_WAIT_BUCKETS"),
}


def bounds(kind):
    """The bounds set now for `kind`, each to 9 significant digits (0.1 * 3 is 0.3 here)."""
    return tuple(float(f"{float(bound):.9g}") for bound in setting(HISTOGRAMS[kind][2]))


def le_label(bound):
    """A bound as the `le` label shows it: "0.005", "1.0", "+Inf"."""
    return "+Inf" if bound == float("inf") else repr(bound)


def stored_metric(kind, part, kind_bounds):
    """The TaskCounter metric of one part ("bucket" or "sum"; the count is the +Inf bucket's) of a
    histogram counted with these bounds."""
    fingerprint = hashlib.sha1(",".join(map(le_label, kind_bounds)).encode()).hexdigest()[:8]
    return f"{kind}_{part}@{fingerprint}"

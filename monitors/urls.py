from django.urls import path

from monitors.web import (actions, alerts, circuits, failures, fanout, findings, health, incidents, job_page, jobs, orphans,
                          overview, periodic, queue_controls, queues, task_speed, workers)
from monitors.web.errors import answers_errors
from monitors.web.respond import api_view

app_name = "monitors"

# Every page, also served as JSON under api/ (same path, same login and staff check).
PAGES = [
    ("", overview.overview, "overview"),
    ("queues/", queues.queue_list, "queues"),
    # <path:…>: queue and circuit names may hold a "/" (they are the operator's, not ours).
    ("queues/<path:name>/", queues.queue_detail, "queue"),
    ("jobs/", jobs.job_list, "jobs"),
    # A task id is the sender's to choose (apply_async(task_id=…)): it may hold a "/" too.
    ("jobs/<path:task_id>/", job_page.job_detail, "job"),
    ("failures/", failures.failure_list, "failures"),
    ("tasks/", task_speed.task_list, "tasks"),
    # ?name=: a task's name is the sender's to write (a newline, "..", anything) — a query value
    # takes any of it, where a path segment could not, or would walk out of the path.
    ("task/", task_speed.task_detail, "task"),
    ("periodic/", periodic.periodic_list, "periodic"),
    ("periodic/entry/", periodic.periodic_entry, "periodic_entry"),
    ("fanout/", fanout.fanout, "fanout"),
    ("orphans/", orphans.orphan_list, "orphans"),
    ("circuits/", circuits.circuit_list, "circuits"),
    ("workers/", workers.worker_list, "workers"),
    ("findings/", findings.finding_list, "findings"),
    ("findings/<int:pk>/", findings.finding_detail, "finding"),
    ("alerts/", alerts.alert_list, "alerts"),
    ("incidents/", incidents.incident_list, "incidents"),
    ("incidents/<int:pk>/", incidents.incident_detail, "incident"),
    ("archive/", actions.archive, "archive"),
    ("actions/", actions.action_list, "actions"),
    ("actions/<int:pk>/", actions.action_detail, "action"),
]

# Changes: POST only, two steps (preview, then confirmed), permission-checked and audited.
CHANGES = [
    ("jobs/replay/", actions.replay, "replay"),
    ("jobs/discard/", actions.discard, "discard"),
    ("jobs/cancel/", actions.cancel, "cancel"),
    ("queues/<path:name>/purge/", actions.purge, "purge"),
    ("queues/<path:name>/pause/", queue_controls.queue_pause, "queue_pause"),
    ("queues/<path:name>/resume/", queue_controls.queue_resume, "queue_resume"),
    ("archive/restore/", actions.restore, "restore"),
    ("circuits/<path:name>/force/", actions.circuit_force, "circuit_force"),
    ("periodic/run/", periodic.periodic_run, "periodic_run"),
    ("periodic/switch/", periodic.periodic_switch, "periodic_switch"),
    ("alerts/<int:pk>/acknowledge/", alerts.acknowledge, "acknowledge"),
    ("alerts/acknowledge/", alerts.acknowledge_selected, "acknowledge_selected"),
]

# Every route answers bad input with 400, a missing permission with 403 naming it, and on /api/
# every error as JSON (monitors/web/errors.py).
urlpatterns = [
    path("healthz", answers_errors(health.healthz), name="healthz"),
    path("metrics", answers_errors(health.metrics), name="metrics"),
    # Changes first: "jobs/replay/" must not be read as the job whose id is "replay".
    *[path(route, answers_errors(view), name=name) for route, view, name in CHANGES],
    *[path(route, answers_errors(view), name=name) for route, view, name in PAGES],
    *[path(f"api/{route}", api_view(answers_errors(view)), name=f"api_{name}") for route, view, name in PAGES],
    path("api/overview/", api_view(answers_errors(overview.overview))),  # the overview by name, beside /api/ itself
]

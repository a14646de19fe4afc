from django.urls import path

from monitors.web import actions, alerts, health, jobs, queues

app_name = "monitors"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/replay/", actions.replay, name="replay"),
    path("jobs/<str:task_id>/", jobs.job_detail, name="job"),
    path("queues/", queues.queue_list, name="queues"),
    path("queues/<str:name>/", queues.queue_detail, name="queue"),
    path("queues/<str:name>/purge/", actions.purge, name="purge"),
    path("archive/", actions.archive, name="archive"),
    path("archive/restore/", actions.restore, name="restore"),
    path("alerts/", alerts.alert_list, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", alerts.acknowledge, name="acknowledge"),
    path("actions/", actions.action_list, name="actions"),
    path("actions/<int:pk>/", actions.action_detail, name="action"),
]

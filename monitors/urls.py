from django.urls import path

from monitors.web import jobs, queues

app_name = "monitors"

urlpatterns = [
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/<str:task_id>/", jobs.job_detail, name="job"),
    path("queues/", queues.queue_list, name="queues"),
    path("queues/<str:name>/", queues.queue_detail, name="queue"),
]

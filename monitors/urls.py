from django.urls import path

from monitors.web import jobs

app_name = "monitors"

urlpatterns = [
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/<str:task_id>/", jobs.job_detail, name="job"),
]

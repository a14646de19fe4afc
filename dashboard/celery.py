"""The Celery app of the Jobwatch site (and of the demo shop's jobs)."""

import os

from celery import Celery

from monitors.integration import watch_celery_app

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("jobwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
watch_celery_app(app)

"""Jobwatch in somebody else's Django + Celery project: the three lines the README gives
(INSTALLED_APPS, one include(), one line in the Celery app module) and nothing else."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.workers import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

SETTINGS = """
from pathlib import Path
BASE = Path(__file__).resolve().parent
SECRET_KEY = "x"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
    "billing",
    "monitors",  # line 1
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                          "django.contrib.auth.context_processors.auth",
                          "django.contrib.messages.context_processors.messages"]}}]
ROOT_URLCONF = "shop.urls"
STATIC_URL = "static/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE / "db.sqlite3"}}
USE_TZ = True
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(BASE / "q"), "data_folder_out": str(BASE / "q"),
                                   "control_folder": str(BASE / "c"), "polling_interval": 0.2}
"""

URLS = """
from django.contrib import admin
from django.urls import include, path
urlpatterns = [
    path("admin/", admin.site.urls),
    path("jobwatch/", include("monitors.urls")),  # line 2
]
"""

CELERY = """
import os
from celery import Celery
from monitors.integration import watch_celery_app
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
watch_celery_app(app)  # line 3
"""

TASKS = """
from celery import shared_task
@shared_task
def send_invoice(invoice_id):
    return invoice_id
"""


def write_project(root):
    files = {
        "shop/__init__.py": "from shop.celery import app as celery_app\n",
        "shop/settings.py": SETTINGS,
        "shop/urls.py": URLS,
        "shop/celery.py": CELERY,
        "billing/__init__.py": "",
        "billing/tasks.py": TASKS,
        "manage.py": "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\n"
                     "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in ("q", "c"):
        (root / "shop" / folder).mkdir()


def test_the_readme_lines_record_jobs_in_another_project(tmp_path):
    write_project(tmp_path)
    # The project finds Jobwatch as an installed package would be found: on the path.
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", DJANGO_SETTINGS_MODULE="shop.settings")

    def manage(*args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    manage("migrate", "--no-input")
    worker = WorkerProcess(tmp_path / "worker.log", env=env, name="shop", app="shop", cwd=tmp_path).start()
    try:
        task_id = manage("shell", "-c", "from billing.tasks import send_invoice; print(send_invoice.delay(42).id)").split()[-1]
        check = f"from monitors.models import JobExecution as J; j = J.objects.filter(task_id='{task_id}', state='succeeded').first(); print(j and (j.result, j.origin_kind, j.args))"
        assert wait_for(lambda: "('42', 'other', [42])" in manage("shell", "-c", check), timeout=60, what="the job recorded")
    finally:
        worker.stop()
    # The dashboard in that project: whole pages, an htmx poll's fragment (without django-htmx's
    # middleware, which the three lines do not add), and htmx / plotly.js among its static files.
    pages = manage("shell", "-v", "0", "-c", PAGES_CHECK.format(task_id=task_id))
    assert pages.split() == ["200", "200", "200", "fragment", "found", "found"], pages


PAGES_CHECK = """
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client
client = Client()
client.force_login(User.objects.create_user("oncall", is_staff=True))
for url in ("/jobwatch/", "/jobwatch/jobs/", "/jobwatch/jobs/{task_id}/"):
    print(client.get(url, HTTP_HOST="localhost").status_code)
part = client.get("/jobwatch/queues/", HTTP_HOST="localhost", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="queue-table").content.decode()
print("fragment" if part.lstrip().startswith('<div id="queue-table"') else part[:300])
for name in ("jobwatch/vendor/htmx-2.0.11.min.js", "jobwatch/vendor/plotly-basic-3.7.0.min.js"):
    print("found" if finders.find(name) else "missing " + name)
"""


"""Jobwatch's periodic tasks run under celery beat whatever the host's Celery module does with its
own schedule, and where they cannot run, something other than beat says so.

Each layout is a real project (SQLite and the filesystem broker in a temporary folder) and a real
`celery beat` process; a layout passes when beat sends both the app's own entry and Jobwatch's."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.workers import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

SETTINGS = """
from pathlib import Path
BASE = Path(__file__).resolve().parent.parent
SECRET_KEY = "x"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles", "monitors"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                          "django.contrib.auth.context_processors.auth",
                          "django.contrib.messages.context_processors.messages"]}}]
ROOT_URLCONF = "shop.urls"
LOGIN_URL = __LOGIN_URL__
STATIC_URL = "static/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE / "db.sqlite3"}}
USE_TZ = True
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(BASE / "q"), "data_folder_out": str(BASE / "q"),
                                    "control_folder": str(BASE / "c"), "polling_interval": 0.2}
# Due often, so that beat sends every entry within seconds.
# A long grace before "not running", so that one beat start clears the warnings for the test.
JOBWATCH = {"SAMPLE_INTERVAL": 1.0, "DETECT_INTERVAL": 1.0, "ALERT_INTERVAL": 1.0, "STALE_AFTER_INTERVALS": 600}
__EXTRA__
"""

URLS = """
from django.contrib import admin
from django.urls import include, path
urlpatterns = [path("admin/", admin.site.urls), path("jobwatch/", include("monitors.urls"))]
"""

HEAD = """
import os
from celery import Celery
from monitors.integration import watch_celery_app
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""
OWN = '{"task": "shop.tasks.nightly", "schedule": 1.0}'

# The Celery module's body after HEAD, as apps write it.
LAYOUTS = {
    # Celery's documentation: the schedule set on app.conf (which reads, and so finalizes, the
    # configuration), one entry added by key, before the watch line.
    "conf-dict-before": f"app.conf.beat_schedule = {{'nightly': {OWN}}}\n"
                        f"app.conf.beat_schedule['hourly'] = {OWN}\nwatch_celery_app(app)\n",
    # The watch line first; then the app reads its configuration and replaces the whole schedule.
    "conf-dict-after": f"watch_celery_app(app)\nif not app.conf.task_always_eager:\n"
                       f"    app.conf.beat_schedule = {{'nightly': {OWN}}}\n",
    "conf-update": f"app.conf.update(beat_schedule={{'nightly': {OWN}}}, timezone='UTC')\nwatch_celery_app(app)\n",
    # The schedule in Django's settings (CELERY_BEAT_SCHEDULE), the watch line last.
    "settings": "watch_celery_app(app)\n",
}


def write_project(root, celery_body, settings_extra="", login_url="admin:login"):
    files = {
        "shop/__init__.py": "from shop.celery import app as celery_app\n",
        "shop/settings.py": SETTINGS.replace("__EXTRA__", settings_extra).replace("__LOGIN_URL__", repr(login_url)),
        "shop/urls.py": URLS,
        "shop/celery.py": HEAD + celery_body,
        "shop/tasks.py": "from celery import shared_task\n@shared_task(name='shop.tasks.nightly')\ndef nightly():\n    return 1\n",
        "manage.py": "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\n"
                     "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in ("q", "c"):
        (root / folder).mkdir(exist_ok=True)
    # autodiscover_tasks() finds shop.tasks through an app of that name.
    (root / "shop" / "apps.py").write_text("")


def environment(root):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "JOBWATCH_VAR_DIR")}
    env.update(PYTHONPATH=f"{root}{os.pathsep}{REPO}", DJANGO_SETTINGS_MODULE="shop.settings")
    return env


def manage(root, *args, check=True):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=root, env=environment(root), capture_output=True,
                            text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """One migrated database, copied into each project (migrating costs seconds)."""
    root = tmp_path_factory.mktemp("template")
    write_project(root, "watch_celery_app(app)\n")
    manage(root, "migrate", "--no-input")
    return root / "db.sqlite3"


def project(root, migrated, body, **options):
    write_project(root, body, **options)
    shutil.copy(migrated, root / "db.sqlite3")
    return root


def run_beat(root, seconds_needed, *wanted, options=(), log_name="beat.log"):
    """Run `celery beat` until it has sent every task in `wanted`; its log."""
    log_path = root / log_name
    with open(log_path, "w") as log:
        beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "shop", "beat", "-l", "info", "--max-interval", "1",
                                 "-s", str(root / "beat-schedule"), *options], cwd=root, env=environment(root), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def sent_all():
                text = log_path.read_text()
                return all(f"Sending due task {name} " in text for name in wanted) or beat.poll() is not None
            wait_for(sent_all, seconds_needed, "beat sending " + ", ".join(wanted))
        finally:
            beat.send_signal(signal.SIGTERM)
            try:
                beat.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(beat.pid, signal.SIGKILL)
    return log_path.read_text()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_beat_runs_jobwatch_and_the_apps_own_entries_in_every_layout(tmp_path, migrated, layout):
    extra = f"CELERY_BEAT_SCHEDULE = {{'nightly': {OWN}}}" if layout == "settings" else ""
    root = project(tmp_path, migrated, LAYOUTS[layout], settings_extra=extra)
    own = ["nightly", "hourly"] if layout == "conf-dict-before" else ["nightly"]
    jobwatch = ["jobwatch.sample_queues", "jobwatch.run_detectors", "jobwatch.send_alerts"]
    log = run_beat(root, 60, *own, *jobwatch)
    for task in own + jobwatch:
        assert f"Sending due task {task} " in log, log[-3000:]


def test_a_silent_install_is_named_by_check_and_by_a_starting_worker(tmp_path, migrated):
    # Forgot the line in the Celery module, and LOGIN_URL: both found before anything runs.
    forgot = project(tmp_path / "forgot", migrated, "", login_url="/accounts/login/")
    report = manage(forgot, "check", check=False).stderr
    assert "jobwatch.W001" in report and "watch_celery_app" in report, report
    assert "jobwatch.W003" in report and "admin:login" in report, report

    # The line is there but beat never ran: `check --database default` and the worker's start say so.
    quiet = project(tmp_path / "quiet", migrated, "watch_celery_app(app)\n")
    assert "jobwatch.W00" not in manage(quiet, "check", check=False).stderr
    report = manage(quiet, "check", "--database", "default", check=False).stderr
    assert "jobwatch.W004" in report and "jobwatch.sample_queues has never run" in report, report
    worker = WorkerProcess(quiet / "worker.log", env=environment(quiet), name="quiet", app="shop", cwd=quiet,
                           inherit_env=False).start()
    try:
        wait_for(lambda: "Jobwatch: its periodic tasks are not running" in worker.log(), 30, "the worker's warning")
    finally:
        worker.stop()

    # Once beat runs (and has noted its start), the warning clears.
    run_beat(quiet, 60, "jobwatch.sample_queues", "jobwatch.run_detectors", "jobwatch.send_alerts")
    report = manage(quiet, "check", "--database", "default", check=False).stderr
    assert "jobwatch.W004" not in report, report


def test_django_celery_beats_database_scheduler_gets_them_too(tmp_path, migrated):
    """django-celery-beat keeps the schedule in its tables: Jobwatch's entries are added there
    when beat starts, and one an operator disabled stays disabled, with a warning. (Its releases
    lag Django's: this runs where it installs — the oldest supported pair, see bin/test.)"""
    pytest.importorskip("django_celery_beat")
    root = project(tmp_path, migrated, "watch_celery_app(app)\n",
                   settings_extra=f"INSTALLED_APPS += ['django_celery_beat']\nCELERY_BEAT_SCHEDULE = {{'nightly': {OWN}}}")
    manage(root, "migrate", "--no-input")
    scheduler = ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    jobwatch = ["jobwatch.sample_queues", "jobwatch.run_detectors", "jobwatch.send_alerts"]
    log = run_beat(root, 60, "nightly", *jobwatch, options=scheduler)
    for task in ["nightly", *jobwatch]:
        assert f"Sending due task {task} " in log, log[-3000:]
    stored = manage(root, "shell", "-c", "from django_celery_beat.models import PeriodicTask as P; "
                                         "print(sorted(P.objects.values_list('name', flat=True)))").stdout
    assert "jobwatch.prune_history" in stored and "nightly" in stored, stored

    manage(root, "shell", "-c", "from django_celery_beat.models import PeriodicTask as P; "
                                "P.objects.filter(name='jobwatch.send_alerts').update(enabled=False)")
    log = run_beat(root, 60, "jobwatch.sample_queues", options=scheduler, log_name="beat2.log")
    assert "jobwatch.send_alerts is disabled in DatabaseScheduler" in log, log[-3000:]


def test_a_project_with_its_own_beat_schedule_gets_jobwatch_periodic_tasks_too():
    """Celery before 5.7 reads a namespaced setting by its CELERY_ name first: a project's own
    CELERY_BEAT_SCHEDULE hid the schedule line 3 adds, and Jobwatch's periodic tasks never ran."""
    from celery import Celery

    from monitors.integration import watch_celery_app

    class ProjectSettings:
        CELERY_BEAT_SCHEDULE = {"billing.report": {"task": "billing.report", "schedule": 3600.0}}
        CELERY_INCLUDE = ["billing.tasks"]

    app = Celery("shop", set_as_current=False)
    app.config_from_object(ProjectSettings, namespace="CELERY")
    watch_celery_app(app)
    assert {"billing.report", "jobwatch.sample_queues", "jobwatch.run_detectors"} <= set(app.conf.beat_schedule)
    assert app.conf.include == ["billing.tasks", "monitors.tasks"]

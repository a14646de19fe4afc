"""Jobwatch in somebody else's Django + Celery project, installed as they would install it.

The wheel built from this checkout (`pip wheel . --no-deps`) goes into a clean virtualenv with
Django and Celery; a project made by `django-admin startproject`, its Celery app laid out as
Celery's "First steps with Django" shows, gets exactly the changes the README's "Add Jobwatch to
your Django + Celery project" lists — and nothing of this repository is on its path. A real worker
runs a job, Jobwatch records it, and every dashboard page renders with DEBUG off from collected,
hashed static files (so a template naming a file the wheel lacks fails).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import monitors
from tests.workers import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

# The Django and Celery releases a project may have, installed beside the wheel. The newest pair
# pins nothing: pip takes the newest releases the wheel's bounds (pyproject.toml) allow, as a fresh
# install of requirements.txt does. The oldest pair is the lowest of those bounds.
PAIRS = [
    pytest.param("", "", id="newest"),
    pytest.param("==5.2.*", "==5.4.*", id="oldest"),
]

# What the app needs at run time; the site's own (dj-database-url, psycopg, gunicorn, whitenoise)
# must not be forced on every project that installs the app.
APP_DEPENDENCIES = {"django", "celery", "kombu", "django-htmx", "plotly", "orjson", "prometheus-client"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--quiet", "-w", str(out)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_holds_the_app_and_nothing_else(wheel):
    version = monitors.__version__
    assert wheel.name == f"jobwatch-{version}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f"jobwatch-{version}.dist-info/"
    package = {name for name in names if not name.startswith(dist_info)}

    # Exactly the files of the monitors package, as they are in the checkout.
    on_disk = {
        path.relative_to(REPO).as_posix() for path in (REPO / "monitors").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert package == on_disk, (sorted(package - on_disk), sorted(on_disk - package))
    for name in (
        "monitors/__init__.py", "monitors/apps.py", "monitors/urls.py",
        "monitors/migrations/0001_initial.py",
        "monitors/templates/jobwatch/base.html",
        "monitors/templatetags/jobwatch.py",
        "monitors/management/commands/jobwatch_detect.py",
        "monitors/static/jobwatch/jobwatch.js", "monitors/static/jobwatch/jobwatch.css",
        "monitors/static/jobwatch/vendor/htmx-2.0.11.min.js", "monitors/static/jobwatch/vendor/htmx.LICENSE",
        "monitors/static/jobwatch/vendor/plotly-basic-3.7.0.min.js", "monitors/static/jobwatch/vendor/plotly.LICENSE",
    ):
        assert name in names, name
    assert not {name.split("/")[0] for name in package} - {"monitors"}

    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "\nRequires-Python: >=3.12\n" in metadata
    assert "\nDescription-Content-Type: text/markdown\n" in metadata and "# Jobwatch" in metadata
    required = {re.split(r"[<>=!~;\[ ]", line.removeprefix("Requires-Dist: "))[0].lower()
                for line in metadata.splitlines() if line.startswith("Requires-Dist: ")}
    assert required == APP_DEPENDENCIES
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {re.split(r"[<>=!~;\[ ]", spec)[0].lower() for spec in declared} == APP_DEPENDENCIES
    # The vendored libraries' licences, also where licence scanners look.
    assert {f"{dist_info}licenses/monitors/static/jobwatch/vendor/{name}.LICENSE" for name in ("htmx", "plotly")} <= names


@pytest.mark.parametrize("django_spec, celery_spec", PAIRS)
def test_the_installed_wheel_records_jobs_and_serves_its_pages_in_a_new_project(tmp_path, wheel, django_spec, celery_spec):
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    # The machine's environment (pip's configuration included) minus everything that would point
    # the project at this repository's settings, database, broker or code.
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        and not key.startswith(("CELERY_", "JOBWATCH_", "DJANGO_"))
    }
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))

    def run(*args, cwd=tmp_path, timeout=180):
        result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return result.stdout

    # 1. Install, as a project would: the wheel, with Django and Celery of the pair.
    run(sys.executable, "-m", "venv", venv)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    run(python, "-m", "pip", "install", "--quiet", wheel, f"Django{django_spec}", f"celery{celery_spec}", timeout=300)
    installed = run(python, "-c", "import django, celery, monitors; print(django.get_version(), celery.__version__, monitors.__version__, monitors.__file__)").split()
    print("installed: Django", installed[0], "Celery", installed[1])
    assert installed[2] == monitors.__version__
    assert Path(installed[3]).is_relative_to(venv), installed[3]  # the wheel's copy, not this checkout
    for spec, version in ((django_spec, installed[0]), (celery_spec, installed[1])):
        if spec:
            assert version.startswith(spec.removeprefix("==").removesuffix("*")), (spec, version)

    # 2. The project: startproject and startapp, the Celery app as Celery's Django guide lays it out.
    run(venv / "bin" / "django-admin", "startproject", "shop")
    project = tmp_path / "shop"
    run(python, "manage.py", "startapp", "billing", cwd=project)
    write_host_project(project)

    # 3. Jobwatch's changes: exactly the README's.
    apply_readme_changes(project)

    def manage(*args, timeout=120):
        return run(python, "manage.py", *args, cwd=project, timeout=timeout)

    manage("check", "--fail-level", "WARNING")
    manage("migrate", "--no-input", "-v", "0")

    # 4. A real worker runs a job; Jobwatch records it, with where it was enqueued from.
    worker = WorkerProcess(tmp_path / "worker.log", env=env, name="shop", app="shop", cwd=project,
                           python=python, inherit_env=False).start()
    try:
        task_id = manage("shell", "-v", "0", "-c", "from billing.tasks import send_invoice; print(send_invoice.delay(42).id)").split()[-1]
        check = (f"from monitors.models import JobExecution as J; j = J.objects.filter(task_id='{task_id}', state='succeeded').first(); "
                 "print(j and (j.result, j.origin_kind, j.args))")
        assert wait_for(lambda: "('42', 'other', [42])" in manage("shell", "-v", "0", "-c", check), timeout=60,
                        what=f"the job recorded (worker log: {worker.log_path})")
    finally:
        worker.stop()
    # One more, left waiting in the queue with the worker gone: the queue's page peeks at it.
    waiting_id = manage("shell", "-v", "0", "-c", "from billing.tasks import send_invoice; print(send_invoice.delay(43).id)").split()[-1]

    # 5. Static files as the README says for production: collectstatic into STATIC_ROOT, here with
    # ManifestStaticFilesStorage, whose manifest then lists the app's files under hashed names.
    manage("collectstatic", "--no-input", "-v", "0")
    manifest = json.loads((project / "staticfiles" / "staticfiles.json").read_text())["paths"]
    for name in ("jobwatch/jobwatch.js", "jobwatch/jobwatch.css", "jobwatch/vendor/htmx-2.0.11.min.js",
                 "jobwatch/vendor/plotly-basic-3.7.0.min.js", "jobwatch/vendor/htmx.LICENSE", "jobwatch/vendor/plotly.LICENSE"):
        assert name in manifest, name
        assert (project / "staticfiles" / manifest[name]).is_file(), manifest[name]

    # 6. Every page, with DEBUG off, through the project's own URLconf and middleware.
    report = json.loads(manage("shell", "-v", "0", "-c", PAGES_CHECK.format(task_id=task_id, waiting_id=waiting_id)).strip().splitlines()[-1])
    assert report["debug"] is False
    assert report["login_redirect"].startswith("/admin/login/?next="), report["login_redirect"]
    assert report["login_page"] == 200
    htmx = "/static/" + manifest["jobwatch/vendor/htmx-2.0.11.min.js"]
    plotly = "/static/" + manifest["jobwatch/vendor/plotly-basic-3.7.0.min.js"]
    for url, page in report["pages"].items():
        assert page["status"] == 200, (url, page)
        if page["html"]:
            assert htmx in page["scripts"] and plotly in page["scripts"], (url, page["scripts"])
    assert report["pages"]["/jobwatch/api/jobs/"]["html"] is False
    assert report["waiting_shown"], "the queue's page does not show the job waiting in it"
    assert report["fragment"].startswith('<div id="queue-table"'), report["fragment"]
    assert 'name="billing.tasks.send_invoice"' in report["metrics"], report["metrics"][:2000]


CELERY_MODULE = '''\
import os

from celery import Celery

# Set the default Django settings module for the 'celery' program.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")

# Using a string here means the worker doesn't have to serialize
# the configuration object to child processes.
# - namespace='CELERY' means all celery-related configuration keys
#   should have a `CELERY_` prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")

# Load task modules from all registered Django apps.
app.autodiscover_tasks()
'''

PACKAGE_INIT = '''\
# This will make sure the app is always imported when
# Django starts so that shared_task will use this app.
from .celery import app as celery_app

__all__ = ("celery_app",)
'''

TASKS = '''\
from celery import shared_task


@shared_task
def send_invoice(invoice_id):
    return invoice_id
'''

# The project's own settings, before Jobwatch: its app, its Celery broker (kombu's filesystem
# transport in the project's folder, so that nothing is shared with other tests), and production:
# DEBUG off, and static files collected into STATIC_ROOT under hashed names.
HOST_SETTINGS = '''
INSTALLED_APPS += ["billing"]

DEBUG = False
ALLOWED_HOSTS = ["localhost"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(BASE_DIR / "broker" / "queue"),
    "data_folder_out": str(BASE_DIR / "broker" / "queue"),
    "control_folder": str(BASE_DIR / "broker" / "control"),
    "polling_interval": 0.2,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
'''


def write_host_project(project):
    (project / "shop" / "celery.py").write_text(CELERY_MODULE)
    (project / "shop" / "__init__.py").write_text(PACKAGE_INIT)
    (project / "billing" / "tasks.py").write_text(TASKS)
    for folder in ("queue", "control"):
        (project / "broker" / folder).mkdir(parents=True)
    with open(project / "shop" / "settings.py", "a") as settings:
        settings.write(HOST_SETTINGS)


def apply_readme_changes(project):
    """The README's "Add Jobwatch to your Django + Celery project", line for line."""
    with open(project / "shop" / "settings.py", "a") as settings:
        settings.write(textwrap.dedent('''
            INSTALLED_APPS += ["monitors"]
            LOGIN_URL = "admin:login"
        '''))
    with open(project / "shop" / "urls.py", "a") as urls:
        urls.write(textwrap.dedent('''
            from django.urls import include

            urlpatterns += [path("jobwatch/", include("monitors.urls"))]
        '''))
    with open(project / "shop" / "celery.py", "a") as celery:
        celery.write(textwrap.dedent('''
            from monitors.integration import watch_celery_app

            watch_celery_app(app)
        '''))


PAGES_CHECK = """
import json, re
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

client = Client(HTTP_HOST="localhost")
report = {{"debug": settings.DEBUG, "pages": {{}}}}
anonymous = client.get("/jobwatch/")
report["login_redirect"] = anonymous.get("Location", str(anonymous.status_code))
report["login_page"] = client.get(report["login_redirect"]).status_code
client.force_login(User.objects.create_user("oncall", is_staff=True))
for url in ("/jobwatch/", "/jobwatch/queues/", "/jobwatch/queues/celery/", "/jobwatch/jobs/",
            "/jobwatch/jobs/{task_id}/", "/jobwatch/failures/", "/jobwatch/fanout/", "/jobwatch/orphans/",
            "/jobwatch/circuits/", "/jobwatch/workers/", "/jobwatch/findings/", "/jobwatch/alerts/",
            "/jobwatch/incidents/", "/jobwatch/archive/", "/jobwatch/actions/", "/jobwatch/api/jobs/"):
    response = client.get(url)
    html = response.get("Content-Type", "").startswith("text/html")
    body = response.content.decode()
    report["pages"][url] = {{"status": response.status_code, "html": html,
                            "scripts": re.findall(r'<script[^>]*src="([^"]+)"', body) if html else []}}
    if url == "/jobwatch/queues/celery/":
        report["waiting_shown"] = "{waiting_id}" in body
# An htmx poll's fragment, without django-htmx's middleware (which a project need not add).
report["fragment"] = client.get("/jobwatch/queues/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="queue-table").content.decode().lstrip()[:300]
report["metrics"] = client.get("/jobwatch/metrics").content.decode()
print(json.dumps(report))
"""

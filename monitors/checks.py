"""`manage.py check` warns about a Jobwatch install that would look fine and see nothing.

    jobwatch.W001  the project's Celery app does not call watch_celery_app(app)
    jobwatch.W002  no Celery app is loaded when Django starts (Celery's Django layout imports it
                   in the project package's __init__.py)
    jobwatch.W003  LOGIN_URL answers 404: anonymous visitors would be sent to a missing page
    jobwatch.W004  Jobwatch's periodic tasks are not running (with `check --database default`:
                   Django runs checks that read the database only when asked to)
"""

from celery import _state
from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.shortcuts import resolve_url
from django.urls import NoReverseMatch, Resolver404, resolve

from monitors.integration import silence_report

WATCH_HINT = ("In the module that creates your Celery app (e.g. proj/celery.py), add "
              "`from monitors.integration import watch_celery_app` and `watch_celery_app(app)` after the app is made.")


@register("jobwatch")
def celery_app_watched(app_configs=None, **kwargs):
    app = _state.get_current_app()
    if getattr(app, "jobwatch_watched", False):
        return []
    # Without an app of the project's own, Celery hands out a fallback named "default".
    if getattr(app, "main", None) in (None, "default"):
        return [Warning("No Celery app is loaded when Django starts, so Jobwatch cannot tell whether it watches it.",
                        hint="Import your Celery app in your project package's __init__.py (`from .celery import app as "
                             "celery_app`), as Celery's Django guide shows. " + WATCH_HINT, id="jobwatch.W002")]
    return [Warning(f"The Celery app {app.main!r} does not call watch_celery_app(app): its workers record nothing "
                    "and Jobwatch's periodic tasks (sampling, detection, alerts) are not scheduled.",
                    hint=WATCH_HINT, id="jobwatch.W001")]


@register("jobwatch", Tags.urls)
def login_url_answers(app_configs=None, **kwargs):
    try:
        url = resolve_url(settings.LOGIN_URL)
    except NoReverseMatch:
        url = None
    if url and url.startswith("/"):
        try:
            resolve(url.split("?")[0])
            return []
        except Resolver404:
            pass
    elif url:
        return []  # another site's login: cannot be checked from here
    return [Warning(f"LOGIN_URL ({settings.LOGIN_URL!r}) is not a page of this site: anonymous visitors to Jobwatch "
                    "would be sent to a 404.", hint='Set LOGIN_URL = "admin:login" (or your own login view).',
                    id="jobwatch.W003")]


@register("jobwatch", Tags.database)
def periodic_tasks_running(app_configs=None, databases=None, **kwargs):
    if not databases:
        return []
    return [Warning(line, id="jobwatch.W004") for line in silence_report()]

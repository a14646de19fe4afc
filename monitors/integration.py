"""The one line a Celery app module needs: `watch_celery_app(app)`.

Recording itself is switched on by the Django app (INSTALLED_APPS); this makes sure it is on in
processes that import the Celery app before Django is set up, and is where Jobwatch's periodic
tasks join the beat schedule as they are added.
"""


def watch_celery_app(app):
    from monitors.recording import signals

    signals.connect()
    return app

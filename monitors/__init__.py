"""Jobwatch: a durable record, queue inspection, detectors and safe repairs for Celery jobs.

Add "monitors" to INSTALLED_APPS, include("monitors.urls") in your URLconf, and call
`monitors.integration.watch_celery_app(app)` in your Celery app module.
"""

__version__ = "0.2.0"

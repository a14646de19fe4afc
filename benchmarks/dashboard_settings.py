"""Settings for benchmarks/dashboard.py: the site's own settings (JOBWATCH as the site has it,
DATABASE_URL and CELERY_BROKER_URL from the environment), with DEBUG off as in production, and
the test client's host allowed."""

from dashboard.settings import *  # noqa: F403
from dashboard.settings import ALLOWED_HOSTS, STORAGES

# With DEBUG on, Django keeps every query in memory and renders error pages: not what a
# production page costs.
DEBUG = False
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]
# The test client speaks plain http to the app itself: no https redirect, no secure-only cookies
# (TLS is the proxy's cost, not a page's). Static files by their plain names: pages are timed,
# not the manifest that `collectstatic` writes for a real deployment.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}

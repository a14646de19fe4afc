"""Settings for benchmarks/dashboard.py: the site's own settings (JOBWATCH as the site has it,
DATABASE_URL and CELERY_BROKER_URL from the environment), with DEBUG off as in production, and
the test client's host allowed."""

from dashboard.settings import *  # noqa: F403
from dashboard.settings import ALLOWED_HOSTS

# With DEBUG on, Django keeps every query in memory and renders error pages: not what a
# production page costs.
DEBUG = False
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]

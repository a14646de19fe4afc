"""Settings for the Jobwatch site.

With no environment at all this is the embedded default: SQLite and kombu's filesystem broker,
both under var/, so `bin/demo` runs on a bare machine, over plain http on localhost. Production sets
DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY, ALLOWED_HOSTS and DEBUG=0, and is served by bin/serve
(gunicorn, whitenoise); with DEBUG off the HTTPS settings below default to what
`manage.py check --deploy` asks for. A malformed value stops start-up with the variable's name
(see dashboard/env.py).
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

try:
    from django.utils.csp import CSP
except ImportError:  # Django 5.2 has no built-in Content Security Policy (6.0 added it): none is sent
    CSP = None

from dashboard.env import (env_bool, env_broker_url, env_database, env_float, env_header, env_int, env_json, env_list,
                           env_str)

BASE_DIR = Path(__file__).resolve().parent.parent
# Empty counts as unset: Path("") would put the database and the static files in the working folder.
VAR_DIR = Path(env_str("JOBWATCH_VAR_DIR", "") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "jobwatch-insecure-development-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "monitors",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (see STORAGES below), answered before sessions or anything else is looked at.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    *(["django.middleware.csp.ContentSecurityPolicyMiddleware"] if CSP is not None else []),
]

# Content Security Policy: scripts only from this site's static files (htmx, plotly.js and
# jobwatch.js; no inline script, no eval), so text from a job that slipped past escaping still
# could not run. Inline styles are allowed because plotly.js positions its charts with them.
if CSP is not None:
    SECURE_CSP = {
        "default-src": [CSP.SELF],
        "script-src": [CSP.SELF],
        "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
        "img-src": [CSP.SELF, "data:"],
        "connect-src": [CSP.SELF],
        "object-src": [CSP.NONE],
        "base-uri": [CSP.SELF],
        "form-action": [CSP.SELF],
        "frame-ancestors": [CSP.NONE],
    }

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", VAR_DIR / "jobwatch.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"  # the site's Jobwatch-branded sign-in page (templates/registration/login.html)
LOGIN_REDIRECT_URL = "monitors:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# Static files are served by the Django process itself, through whitenoise: one process to run
# and no separate web server to configure, yet served as a web server would — each file's name
# carries a hash of its content (so it can be cached for ten years, and a new release's file has a
# new name), and a gzip copy is made once, at collectstatic, not per request. With DEBUG off the
# files come from STATIC_ROOT, which bin/serve fills with collectstatic; a template naming a file
# that is not there fails instead of linking to nothing. With DEBUG on (the demo) they are read
# from the apps' folders as they are, so nothing needs collecting.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}
# Decided here, where DEBUG is known, rather than by whitenoise from DEBUG at the first request
# (which the test runner turns off): with DEBUG on, files are found in the apps' folders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- HTTPS ---------------------------------------------------------------------------------------
# With DEBUG off the site expects to be reached over HTTPS (most often through a proxy that
# terminates TLS); with DEBUG on (the demo, on localhost) plain http works. Each one can be set
# from the environment.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Browsers then refuse plain http to this host for a year. Subdomains are included, as the
# dashboard usually has a host name of its own (SECURE_HSTS_INCLUDE_SUBDOMAINS=0 when other sites
# live under it). Preloading is left off: asking browsers to ship the rule for a whole registrable
# domain is its owner's decision, not this site's.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = ["security.W021"]  # "preload is off": deliberately, see above
# Behind a proxy that terminates TLS, the request reaches Django as http; the proxy says it was
# https in a header, e.g. SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto. Set it only when the proxy
# sets that header on every request (overwriting the client's), or a client could claim https.
SECURE_PROXY_SSL_HEADER = env_header("SECURE_PROXY_SSL_HEADER", "https")
# Origins allowed to POST (changes, the login form) beyond this host itself: a proxy that rewrites
# the Host header needs its public origin here, e.g. https://jobwatch.example.com.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"monitors": {"handlers": ["console"], "level": env_str("JOBWATCH_LOG_LEVEL", "INFO")}},
}

# --- Celery -------------------------------------------------------------------------------------
# The embedded broker keeps each message as a file; every process on this machine shares them.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's own filesystem transport can hand a worker a half-written message (kombu#1551);
    # this one renames each message into place only once it is complete.
    CELERY_BROKER_TRANSPORT = "dashboard.atomic_filesystem:Transport"
    for folder in ("queue", "control", "processed"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "polling_interval": 0.25,
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", None)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Email: alert notifications ------------------------------------------------------------------
# With SMTP_HOST, mail goes out through it. Without, the demo (DEBUG on) prints it to the log; in
# production (DEBUG off) it goes to the mail relay on this machine (localhost:25, Django's own
# default), since printing alerts to a log would lose them while they look sent: a relay that is
# not there shows as a failing channel on the Alerts page instead.
SMTP_HOST = env_str("SMTP_HOST", "")
if SMTP_HOST:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": {
        "host": SMTP_HOST, "port": env_int("SMTP_PORT", 587), "username": env_str("SMTP_USER", ""),
        "password": env_str("SMTP_PASSWORD", ""), "use_tls": env_bool("SMTP_TLS", True), "timeout": 10,
    }}}
elif DEBUG:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                           "OPTIONS": {"host": "localhost", "port": 25, "timeout": 10}}}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "jobwatch@localhost")

# --- Jobwatch -----------------------------------------------------------------------------------
# Every key is optional; monitors/conf.py lists the defaults and what each one does.
JOBWATCH = {
    "RECORDER_ENABLED": env_bool("JOBWATCH_RECORDER_ENABLED", True),
    "RECORDER_BUFFER_SIZE": env_int("JOBWATCH_RECORDER_BUFFER_SIZE", 10_000),
    "RECORDER_FLUSH_INTERVAL": env_float("JOBWATCH_RECORDER_FLUSH_INTERVAL", 0.5),
    "SAMPLE_INTERVAL": env_float("JOBWATCH_SAMPLE_INTERVAL", 15.0),
    # Circuit breakers' shared state: "database" (this site's database) or a redis:// URL.
    "CIRCUIT_STORE": env_str("JOBWATCH_CIRCUIT_STORE", "database"),
    # Alerts: where they go (each optional), links back, holds; /metrics' bearer token.
    "ALERT_CHANNELS": [
        channel for channel in (
            {"name": "email", "kind": "email", "target": env_str("JOBWATCH_ALERT_EMAILS", "")},
            {"name": "webhook", "kind": "webhook", "target": env_str("JOBWATCH_ALERT_WEBHOOK", "")},
            {"name": "slack", "kind": "slack", "target": env_str("JOBWATCH_ALERT_SLACK_WEBHOOK", "")},
        ) if channel["target"]
    ],
    "DASHBOARD_URL": env_str("JOBWATCH_DASHBOARD_URL", ""),
    "ALERT_HOLD_SECONDS": env_float("JOBWATCH_ALERT_HOLD_SECONDS", 15.0),
    "ALERT_RESOLVE_HOLD_SECONDS": env_float("JOBWATCH_ALERT_RESOLVE_HOLD_SECONDS", 60.0),
    "METRICS_TOKEN": env_str("JOBWATCH_METRICS_TOKEN", ""),
    # Detector thresholds and circuit options as JSON objects (monitors/conf.py lists the keys).
    "THRESHOLDS": env_json("JOBWATCH_THRESHOLDS", {}),
    "QUEUE_THRESHOLDS": env_json("JOBWATCH_QUEUE_THRESHOLDS", {}),
    "TASK_THRESHOLDS": env_json("JOBWATCH_TASK_THRESHOLDS", {}),
    "CIRCUITS": env_json("JOBWATCH_CIRCUITS", {}),
    "HISTORY_RETENTION_DAYS": env_int("JOBWATCH_HISTORY_RETENTION_DAYS", 30),
    "PARTITION_HISTORY": env_bool("JOBWATCH_PARTITION_HISTORY", False),
}

# A streaming replica of DATABASE_URL: the pages, their JSON and the detectors read the job
# history from it (monitors/replica.py). No connection pool: a replica that is down must fail a
# connection at once (a pool waits out its whole timeout), so the pages fall back to the primary
# without waiting; connect_timeout bounds the wait for a host that does not answer at all.
if env_str("REPLICA_DATABASE_URL", ""):
    DATABASES["replica"] = replica = env_database("REPLICA_DATABASE_URL", None)
    replica["OPTIONS"].pop("pool", None)
    # Kept open between requests instead: a new PostgreSQL backend plans its first query over a
    # day-partitioned history with none of the partitions' indexes read yet (33–70 ms at 39 day
    # partitions on benchmarks/dashboard.py's history, against 4–7 ms warm), which a connection per
    # request would add to every page. Checked before each request's first read (health checks),
    # so a replica that went away is noticed then, and its reads go to the primary.
    replica["CONN_MAX_AGE"] = 600
    replica["CONN_HEALTH_CHECKS"] = True
    if replica["ENGINE"] == "django.db.backends.postgresql":
        replica["OPTIONS"].setdefault("connect_timeout", 3)
        # A kept connection to a host that vanished without a word (a dead machine, a failover to
        # another address, a firewall dropping idle connections) would hang its health check for
        # the kernel's ~15 minutes: unacknowledged data gives up after 5 s, and keepalives find a
        # silent peer within ~30 s while a long query waits for its answer.
        for option, value in (("tcp_user_timeout", 5000), ("keepalives", 1), ("keepalives_idle", 15),
                              ("keepalives_interval", 5), ("keepalives_count", 3)):
            replica["OPTIONS"].setdefault(option, value)
    replica["TEST"] = {"MIRROR": "default"}  # a test reads its own writes
    DATABASE_ROUTERS = ["monitors.replica.ReadReplicaRouter"]
    MIDDLEWARE.append("monitors.replica.ReplicaReadsMiddleware")
    JOBWATCH["READ_DATABASE"] = "replica"

# --- The demo shop ------------------------------------------------------------------------------
DEMO_GATEWAY_URL = env_str("DEMO_GATEWAY_URL", "http://127.0.0.1:8765")
# The shop's own periodic tasks, which rundemo turns on (so a benchmark or test of this site has
# only Jobwatch's): a healthy one, a nightly one, and a stock import that fails now and then
# (demo/tasks.py), so the Periodic tasks page has something to show.
if env_bool("DEMO_BEAT_SCHEDULE", False):
    from celery.schedules import crontab

    CELERY_BEAT_SCHEDULE = {
        "exchange rates": {"task": "demo.tasks.refresh_exchange_rates", "schedule": 30.0},
        "partner stock import": {"task": "demo.tasks.import_partner_stock", "schedule": 60.0},
        "daily sales report": {"task": "demo.tasks.send_daily_sales_report", "schedule": crontab(minute=0, hour=3)},
    }

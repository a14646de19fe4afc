from django.apps import AppConfig


class MonitorsConfig(AppConfig):
    name = "monitors"
    verbose_name = "Jobwatch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from monitors import checks  # noqa: F401  (registers Jobwatch's system checks)
        from monitors.conf import check_settings
        from monitors.recording import signals

        check_settings()
        # Every process that loads Django records what it enqueues (web servers, scripts, beat);
        # worker processes record what they run.
        signals.connect()

from django.apps import AppConfig


class MonitorsConfig(AppConfig):
    name = "monitors"
    verbose_name = "Jobwatch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, as Django asks of an AppConfig: this module is loaded before the models.
        from monitors import checks  # noqa: F401  (registers Jobwatch's system checks)
        from monitors import conf, replica
        from monitors.circuits import breaker
        from monitors.recording import signals

        conf.check_settings()
        breaker.check_settings()
        # Every process that loads Django records what it enqueues (web servers, scripts, beat);
        # worker processes record what they run.
        signals.connect()
        # The detectors' task reads the history from the replica, where one is configured.
        replica.connect_signals()

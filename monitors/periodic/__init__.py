"""Periodic tasks: every beat entry, its schedule in words, when it should run next, and the runs
the recorder kept of it (each job beat sends names its entry: JobExecution.origin_entry).

    entries()                 # every entry: the Celery app's beat_schedule, django-celery-beat's table
    expected_after(entry, t)  # when the entry should run next after `t`
"""

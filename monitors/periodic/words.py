"""A schedule in the operator's words: "every 15 s", "every day at 03:00 UTC", "at minute 5 of
every hour", "every Monday at 09:30 Europe/Paris". Read from the schedule objects' own fields
(Celery's schedule, crontab and solar; django-celery-beat's clocked), never from their repr;
what has no short reading keeps its cron fields ("crontab 5,35 */2 * * 1-5")."""

from datetime import timedelta

from celery.schedules import crontab, schedule, solar

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def in_words(entry_schedule, zone="UTC"):
    if isinstance(entry_schedule, crontab):
        return crontab_in_words(entry_schedule, zone)
    if isinstance(entry_schedule, solar):
        return f"at {entry_schedule.event.replace('_', ' ')} at {entry_schedule.lat:g}, {entry_schedule.lon:g}"
    if isinstance(entry_schedule, schedule):
        return f"every {interval(entry_schedule.run_every)}"
    clocked = getattr(entry_schedule, "clocked_time", None)  # django-celery-beat's one-off
    if clocked is not None:
        return f"once, at {clocked:%Y-%m-%d %H:%M} {zone}"
    return type(entry_schedule).__name__


def interval(every):
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            if unit == "day":
                return "day" if count == 1 else f"{count} days"
            return f"{count} {unit}"
    return f"{seconds:g} s"


def crontab_in_words(cron, zone):
    minute, hour = str(cron._orig_minute), str(cron._orig_hour)
    day_of_week, day_of_month, month = str(cron._orig_day_of_week), str(cron._orig_day_of_month), str(cron._orig_month_of_year)
    zone = str(getattr(cron, "tz", None) or zone)
    fields = f"crontab {minute} {hour} {day_of_month} {month} {day_of_week}"
    if month != "*" or day_of_month != "*":
        return f"{fields} ({zone})"
    days = "every day" if day_of_week == "*" else weekdays(day_of_week)
    if days is None:
        return f"{fields} ({zone})"
    if minute.isdigit() and hour.isdigit():
        return f"{days} at {int(hour):02d}:{int(minute):02d} {zone}"
    if minute.isdigit() and hour == "*":
        return f"at minute {int(minute)} of every hour" + ("" if day_of_week == "*" else f", {days}")
    if minute.startswith("*/") and minute[2:].isdigit() and hour == "*":
        return f"every {int(minute[2:])} min" + ("" if day_of_week == "*" else f", {days}")
    if minute == "*" and hour == "*":
        return "every minute" + ("" if day_of_week == "*" else f", {days}")
    return f"{fields} ({zone})"


def weekdays(field):
    """"every Monday", "Monday to Friday", "Monday, Thursday"; None for what is not a plain list
    or range of days."""
    names = {**{str(index): day for index, day in enumerate(DAYS)}, "7": "Sunday",
             **{day[:3].lower(): day for day in DAYS}}
    if "-" in field and "," not in field:
        first, _, last = field.partition("-")
        if first.lower() in names and last.lower() in names:
            return f"{names[first.lower()]} to {names[last.lower()]}"
        return None
    parts = [part.strip().lower() for part in field.split(",")]
    if not all(part in names for part in parts):
        return None
    if len(parts) == 1:
        return f"every {names[parts[0]]}"
    return ", ".join(names[part] for part in parts)

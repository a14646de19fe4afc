from django.db import migrations, models

# The window index gains the seconds column, so that the Tasks page's per-span reads
# (monitors/web/speeds.py: times_by_task) are answered from the index alone. Built before the old
# one is dropped: the pages keep an index to read meanwhile.


class Migration(migrations.Migration):
    dependencies = [("monitors", "0018_count_estimate_function")]

    operations = [
        migrations.AddIndex(
            model_name="jobhistogram",
            index=models.Index(fields=["resolution", "measure", "start", "task_name", "outcome", "upper_ms", "count", "total"],
                               name="jobwatch_histogram_times"),
        ),
        migrations.RemoveIndex(model_name="jobhistogram", name="jobwatch_histogram_window"),
    ]

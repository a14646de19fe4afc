from django.db import migrations, models


class Migration(migrations.Migration):
    """The missed-runs tally counts due times after the last one counted (not per gap since a run)."""

    dependencies = [
        ("monitors", "0014_periodic_tally_switch_and_scheduler"),
    ]

    operations = [
        migrations.RemoveField(model_name="periodictally", name="gap_from"),
        migrations.RemoveField(model_name="periodictally", name="gap_missed"),
        migrations.AddField(model_name="periodictally", name="counted_through", field=models.DateTimeField(blank=True, null=True)),
    ]

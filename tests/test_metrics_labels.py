"""/metrics keeps a bounded number of series whatever names messages carry: a hostile or
malformed task name never becomes a label, names past the cap are summed under "(other)", the
site's registered tasks are always shown, and no count is lost in the folding."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitors import metric_histograms
from monitors.models import TaskCounter
from monitors.web.metric_labels import OTHER, kept_values

pytestmark = [pytest.mark.django_db]

HOSTILE = "ux.<svg onload=alert(3)>"


def counts(name, sent, queue="default", failed=0):
    TaskCounter.objects.create(metric="sent", name=name, hostname="w@h", queue_name=queue, value=sent)
    if failed:
        TaskCounter.objects.create(metric="failed", name=name, hostname="w@h", queue_name=queue,
                                   exception="NotRegistered", value=failed)
    bounds = metric_histograms.bounds("runtime")
    TaskCounter.objects.create(metric=metric_histograms.stored_metric("runtime", "bucket", bounds), name=name,
                               hostname="w@h", queue_name=queue, le="+Inf", value=sent)
    TaskCounter.objects.create(metric=metric_histograms.stored_metric("runtime", "sum", bounds), name=name,
                               hostname="w@h", queue_name=queue, value=0.01 * sent)


def scrape(client, settings):
    settings.JOBWATCH = {**settings.JOBWATCH, "METRICS_TOKEN": "t", "METRICS_MAX_LABEL_VALUES": 5}
    text = client.get("/jobwatch/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    return text, {family.name: family for family in text_string_to_metric_families(text)}


def test_hostile_and_excess_task_names_fold_into_one_series_and_nothing_is_lost(client, settings):
    counts("demo.tasks.noop", 1)  # registered by the site: shown although the quietest
    for n in range(10):
        counts(f"billing.job_{n:02d}", 100 + n)
    counts(HOSTILE, 7, failed=7)
    counts("x" * 250, 3)  # too long to be a name
    counts("billing.invoice", 1, queue="bad queue <name>")

    text, families = scrape(client, settings)
    assert "<svg" not in text and "x" * 250 not in text and "bad queue" not in text
    sent = {sample.labels["name"]: sample.value for sample in families["celery_task_sent"].samples
            if sample.labels["queue_name"] == "default"}
    # Five in all: the registered task, then the four busiest plausible names; the rest summed.
    assert set(sent) == {"demo.tasks.noop", "billing.job_09", "billing.job_08", "billing.job_07", "billing.job_06", OTHER}
    assert sent[OTHER] == sum(100 + n for n in range(6)) + 7 + 3
    total = sum(sample.value for sample in families["celery_task_sent"].samples)
    assert total == 1 + sum(100 + n for n in range(10)) + 7 + 3 + 1  # every job still counted
    [failed] = families["celery_task_failed"].samples
    assert failed.labels["name"] == OTHER and failed.value == 7
    runtime = [sample for sample in families["celery_task_runtime"].samples
               if sample.name == "celery_task_runtime_count" and sample.labels["name"] == OTHER]
    assert [sample.value for sample in runtime if sample.labels["queue_name"] == "default"] == [sum(100 + n for n in range(6)) + 10]
    folded = {sample.labels["label"]: sample.value for sample in families["jobwatch_metrics_folded_label_values"].samples}
    assert folded == {"name": 9, "queue_name": 1}  # job_00…05, the hostile, the long one, billing.invoice


def test_the_choice_is_stable_and_keeps_known_names_beyond_the_cap():
    activity = {"a.one": 5, "a.two": 5, "a.three": 1, "a.known": 0, "bad name": 100}
    assert kept_values(activity, 2) == {"a.one", "a.two"}
    assert kept_values(activity, 2, known={"a.known", "a.three"}) == {"a.known", "a.three"}
    assert kept_values(activity, 3, known={"a.known"}) == {"a.known", "a.one", "a.two"}

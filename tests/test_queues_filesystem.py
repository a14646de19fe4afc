"""Queue inspection on the embedded filesystem broker: one file per message, read in place."""

import os
from queue import Empty

import pytest

from monitors.brokers.filesystem import FilesystemBroker
from tests.brokers import GARBAGE_PROBLEMS, celery_app, garbage_envelopes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app(tmp_path):
    folders = {name: tmp_path / name for name in ("queue", "control")}
    for folder in folders.values():
        folder.mkdir()
    app = celery_app(
        "filesystem://", data_folder_in=str(folders["queue"]), data_folder_out=str(folders["queue"]),
        control_folder=str(folders["control"]),
    )
    app.conf.broker_transport = "dashboard.atomic_filesystem:Transport"  # the embedded default's
    return app


def test_it_reads_depth_age_and_messages_in_consumption_order_without_moving_them(app, tmp_path):
    ids = [app.send_task("demo.tasks.echo", args=[n], queue="reports").id for n in range(5)]
    app.send_task("demo.tasks.noop", queue="other")
    files_before = sorted(os.listdir(tmp_path / "queue"))
    broker = FilesystemBroker(app)

    stats = broker.stats(["reports", "other", "missing"])
    assert (stats["reports"].depth, stats["other"].depth, stats["missing"].depth) == (5, 1, 0)
    assert stats["reports"].oldest_published_at is not None
    assert [m.task_id for m in broker.peek("reports", 0, 3)] == ids[:3]
    assert [m.args for m in broker.peek("reports", 3, 10)] == [[3], [4]]
    assert sorted(m.task_id for m in broker.scan("reports")) == sorted(ids)
    assert {"reports", "other"} <= broker.queue_names()
    assert sorted(os.listdir(tmp_path / "queue")) == files_before


def test_it_shows_garbage_files_as_undecodable(app, tmp_path):
    app.send_task("demo.tasks.noop", queue="mixed")
    folder = tmp_path / "queue"
    (good,) = os.listdir(folder)
    for index, raw in enumerate(garbage_envelopes((folder / good).read_bytes()).values()):
        (folder / f"{9_000_000_000_000 + index}_x.mixed.msg").write_bytes(raw)
    messages = FilesystemBroker(app).peek("mixed")
    assert messages[0].decodable
    assert [m.problem for m in messages[1:]] == list(GARBAGE_PROBLEMS.values())


def test_purge_on_the_embedded_broker_archives_removes_and_restores(app):
    from django.contrib.auth.models import Permission, User

    from monitors.actions import purge_messages, restore_messages
    from monitors.models import ArchivedMessage
    from monitors.actions.purge import MessageSelection

    operator = User.objects.create_user("oncall", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["purge_messages", "restore_messages"]))
    operator = User.objects.get(pk=operator.pk)
    sent = [app.send_task("demo.tasks.echo" if n % 2 else "demo.tasks.noop", args=[n], queue="reports").id for n in range(6)]
    broker = FilesystemBroker(app)

    result = purge_messages(operator, "reports", MessageSelection(task="demo.tasks.echo"), surface="command", app=app)
    assert (result.log.matched, result.log.succeeded) == (3, 3)
    assert [m.task_id for m in broker.peek("reports", 0, 10)] == sent[0::2]
    restored = restore_messages(operator, list(ArchivedMessage.objects.values_list("pk", flat=True)), surface="command", app=app)
    assert restored.log.succeeded == 3
    assert sorted(m.task_id for m in broker.peek("reports", 0, 10)) == sorted(sent)


def test_no_consumer_takes_a_message_that_is_still_being_written(app, tmp_path, monkeypatch):
    """The embedded default's transport writes each message under a temporary name first: one that
    kombu's consumers skip, the ones before 5.7 too (they take any name containing ".<queue>.msg")."""
    monkeypatch.setattr(os, "replace", lambda *args: None)  # the write never completes
    app.send_task("demo.tasks.noop", queue="reports")
    assert [name.endswith(".partial") for name in os.listdir(tmp_path / "queue")] == [True]
    with app.connection_for_read() as connection:
        with pytest.raises(Empty):
            connection.default_channel._get("reports")

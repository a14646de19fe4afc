"""The queue pages: staff only, read from samples, peek without disturbing, everything from a
message escaped, and RabbitMQ's disturbing peek only after a confirmed POST."""

import pytest
import redis
from celery import current_app
from django.contrib.auth.models import User

from monitors.integration import set_setting
from monitors.sampling import sample_queues
from tests.brokers import celery_app
from tests.workers import fresh_redis_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


@pytest.fixture
def broker():
    """The site's own Celery app on an empty Redis database."""
    fresh_redis_url(14)
    return current_app


@pytest.mark.parametrize("path", ["/jobwatch/queues/", "/jobwatch/queues/celery/", "/jobwatch/jobs/"])
def test_it_sends_anonymous_visitors_to_log_in_and_refuses_non_staff(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "login" in response["Location"]
    client.force_login(User.objects.create_user("customer"))
    assert client.get(path).status_code == 403


def test_the_queue_table_comes_from_samples(staff_client, broker):
    for _ in range(3):
        broker.send_task("demo.tasks.noop", queue="mail")
    sample_queues(broker)

    page = staff_client.get("/jobwatch/queues/").content.decode()

    assert 'href="/jobwatch/queues/mail/"' in page
    assert "No queue samples yet" not in page


def test_a_queue_page_peeks_escapes_and_searches_without_taking_anything(staff_client, broker):
    hostile = broker.send_task("demo.tasks.echo", args=["<script>alert(1)</script>"], queue="mail")
    broker.send_task("demo.tasks.noop", queue="mail")
    before = redis.Redis(db=14).llen("mail")

    page = staff_client.get("/jobwatch/queues/mail/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert hostile.id in page

    found = staff_client.get("/jobwatch/queues/mail/", {"q": "echo"}).content.decode()
    assert "1 match among the first 2 messages" in found
    assert redis.Redis(db=14).llen("mail") == before


def test_peeking_on_rabbitmq_needs_a_confirmed_post(staff_client):
    original = current_app.conf.broker_url
    # set_setting: a plain `conf.broker_url = …` does not override CELERY_BROKER_URL before Celery 5.7.
    set_setting(current_app.conf, "broker_url", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        celery_app(current_app.conf.broker_url).send_task("demo.tasks.noop", queue="jobwatch-web-test")
        first = staff_client.get("/jobwatch/queues/jobwatch-web-test/").content.decode()
        assert "flagged redelivered" in first and "demo.tasks.noop" not in first
        confirmed = staff_client.post("/jobwatch/queues/jobwatch-web-test/").content.decode()
        assert "demo.tasks.noop" in confirmed
    finally:
        with current_app.connection_for_write() as connection:
            channel = connection.channel()
            channel.queue_delete("jobwatch-web-test")
            channel.close()
        set_setting(current_app.conf, "broker_url", original)

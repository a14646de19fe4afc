"""The site's own sign-in page (templates/registration/login.html): where every Jobwatch page sends
a visitor who is not signed in, and what it says to one who cannot go on."""

import pytest
from django.contrib.auth.models import User


@pytest.fixture
def accounts(db):
    User.objects.create_user("oncall", password="s3cret-pass", is_staff=True)
    User.objects.create_user("sales", password="s3cret-pass")


def test_a_jobwatch_page_sends_a_visitor_to_the_sites_sign_in_and_back(client, accounts):
    response = client.get("/jobwatch/queues/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/jobwatch/queues/"
    page = client.get(response["Location"]).content.decode()
    assert "<title>Sign in · Jobwatch</title>" in page and 'name="next" value="/jobwatch/queues/"' in page
    assert "site/login.css" in page and "site/favicon.svg" in page

    response = client.post("/accounts/login/", {"username": "oncall", "password": "s3cret-pass", "next": "/jobwatch/queues/"})
    assert response.status_code == 302 and response["Location"] == "/jobwatch/queues/"
    assert client.get("/jobwatch/queues/").status_code == 200


def test_a_wrong_password_is_said_and_a_user_who_is_not_staff_is_told_why(client, accounts):
    response = client.post("/accounts/login/", {"username": "oncall", "password": "wrong"})
    assert response.status_code == 200 and "correct username and password" in response.content.decode()

    client.post("/accounts/login/", {"username": "sales", "password": "s3cret-pass"})
    assert client.get("/jobwatch/").status_code == 403
    page = client.get("/accounts/login/?next=/jobwatch/").content.decode()
    assert "<strong>sales</strong>, who is not a staff user" in page


def test_signing_out_is_a_post_and_lands_on_the_sign_in_page(client, accounts):
    client.login(username="oncall", password="s3cret-pass")
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/jobwatch/").status_code == 302

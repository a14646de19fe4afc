"""This site served as in production: `bin/serve` (collectstatic, then gunicorn with whitenoise),
DEBUG off, behind a proxy that terminates TLS and says so in X-Forwarded-Proto.

The server is a real gunicorn on a free port of 127.0.0.1, on a fresh SQLite database and var/
folder of its own; requests are plain HTTP with the header the proxy would add.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from django.core.management.utils import get_random_secret_key

from tests.workers import REPO, wait_for

pytestmark = pytest.mark.integration

HTMX = "jobwatch/vendor/htmx-2.0.11.min.js"
YEAR = 365 * 24 * 3600


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def production(tmp_path):
    """The environment of a production deployment, and nothing of this machine's test settings."""
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key in ("PATH", "HOME", "LANG", "TMPDIR") or key.startswith("LC_")}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DEBUG="0",
        SECRET_KEY=get_random_secret_key(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"sqlite:///{tmp_path / 'jobwatch.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
        JOBWATCH_VAR_DIR=str(tmp_path / "var"),
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        BIND_HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        DJANGO_SUPERUSER_USERNAME="oncall",
        DJANGO_SUPERUSER_PASSWORD="a long password for on-call",
        DJANGO_SUPERUSER_EMAIL="oncall@example.com",
    )
    assert len(env["SECRET_KEY"]) >= 50
    return env


def manage(env, *args):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


class Browser:
    """Plain HTTP to the server, as the TLS proxy in front of it forwards each request. Cookies are
    kept by hand: they are Secure, which cookie jars send over https only."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}

    def request(self, method, path, body=None, https=True, headers=()):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Host": f"127.0.0.1:{self.port}", **dict(headers)}
        if https:
            headers["X-Forwarded-Proto"] = "https"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if body is not None:
            body = urlencode(body)
            headers.update({"Content-Type": "application/x-www-form-urlencoded",
                            "Origin": f"https://127.0.0.1:{self.port}"})
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or ():
            cookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                assert morsel["secure"], f"cookie {name} is not Secure: {header}"
                self.cookies[name] = morsel.value
        return response, content


def test_bin_serve_runs_the_site_like_production(production, tmp_path):
    # The deployment checks pass with exactly these variables.
    assert "no issues" in manage(production, "check", "--deploy", "--fail-level", "WARNING")
    manage(production, "migrate", "--no-input", "-v", "0")
    manage(production, "createsuperuser", "--no-input")

    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([str(REPO / "bin" / "serve")], cwd=tmp_path, env=production, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    port = int(production["PORT"])
    browser = Browser(port)

    def answers():
        if server.poll() is not None:
            raise AssertionError(f"bin/serve exited with {server.returncode}:\n{(tmp_path / 'serve.log').read_text()}")
        return answers_on(port)

    try:
        wait_for(answers, timeout=60, what="gunicorn listening")
        served = (tmp_path / "serve.log").read_text()
        assert "Starting gunicorn" in served and "Using worker: gthread" in served, served

        # Plain http is sent to https; a page needing a login sends the visitor to the site's own
        # sign-in page, which has the security headers and its own static files.
        response, _ = browser.request("GET", "/accounts/login/", https=False)
        assert response.status == 301 and response.headers["Location"] == f"https://127.0.0.1:{port}/accounts/login/"
        response, _ = browser.request("GET", "/jobwatch/")
        assert response.status == 302 and response.headers["Location"] == "/accounts/login/?next=/jobwatch/"
        response, content = browser.request("GET", "/accounts/login/?next=/jobwatch/")
        assert response.status == 200 and b"Sign in" in content
        for stylesheet in re.findall(rb'href="(/static/site/[^"]+)"', content):
            assert browser.request("GET", stylesheet.decode())[0].status == 200, stylesheet
        assert int(re.search(r"max-age=(\d+)", response.headers["Strict-Transport-Security"])[1]) >= YEAR
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', content)[1].decode()

        # Log in through the form (CSRF token, Origin checked), then a Jobwatch page.
        response, _ = browser.request("POST", "/accounts/login/?next=/jobwatch/", body={
            "csrfmiddlewaretoken": token, "username": "oncall", "password": production["DJANGO_SUPERUSER_PASSWORD"],
            "next": "/jobwatch/"})
        assert response.status == 302 and response.headers["Location"] == "/jobwatch/", response.status
        assert "sessionid" in browser.cookies
        response, content = browser.request("GET", "/jobwatch/")
        assert response.status == 200
        page = content.decode()

        # The page names htmx by its hashed name from the manifest collectstatic wrote, and
        # whitenoise serves that file, compressed, to be cached for good.
        manifest = json.loads((tmp_path / "var" / "static" / "staticfiles.json").read_text())["paths"]
        hashed = "/static/" + manifest[HTMX]
        assert hashed != f"/static/{HTMX}" and f'src="{hashed}"' in page, re.findall(r'<script[^>]*>', page)
        response, content = browser.request("GET", hashed, headers={"Accept-Encoding": "gzip"})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Content-Encoding"] == "gzip"
        cache = response.headers["Cache-Control"]
        assert "immutable" in cache and int(re.search(r"max-age=(\d+)", cache)[1]) >= YEAR, cache
        response, content = browser.request("GET", hashed)
        assert content == (REPO / "monitors" / "static" / HTMX).read_bytes()
        # The unhashed name is served too, but only briefly cached: it changes with a release.
        response, _ = browser.request("GET", f"/static/{HTMX}")
        assert response.status == 200 and int(re.search(r"max-age=(\d+)", response.headers["Cache-Control"])[1]) < 3600
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # gunicorn's graceful shutdown
        try:
            server.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()
    assert not answers_on(port)


def answers_on(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False

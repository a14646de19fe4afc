"""The shop's client for the demo payment gateway (demo/gateway.py)."""

import json
import urllib.request


class GatewayError(ConnectionError):
    """The gateway refused or could not be reached."""


def charge(base_url, payment_id, amount_cents, timeout=3.0):
    return post(base_url, "/charge", {"payment_id": payment_id, "amount_cents": amount_cents}, timeout)["reference"]


def notify_warehouse(base_url, order_id, timeout=3.0):
    return post(base_url, "/warehouse", {"order_id": order_id}, timeout)["reference"]


def post(base_url, path, payload, timeout):
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
            answer["reference"]  # noqa: B018 - an answer without one is a broken gateway
            return answer
    except (OSError, ValueError, KeyError) as error:
        raise GatewayError(f"POST {base_url}{path}: {error}") from error

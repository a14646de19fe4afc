"""The shop's client for the demo payment gateway (demo/gateway.py)."""

import json
import urllib.request


class GatewayError(ConnectionError):
    """The gateway refused or could not be reached."""


def charge(base_url, payment_id, amount_cents, timeout=3.0):
    body = json.dumps({"payment_id": payment_id, "amount_cents": amount_cents}).encode()
    request = urllib.request.Request(f"{base_url}/charge", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)["reference"]
    except (OSError, ValueError, KeyError) as error:
        raise GatewayError(f"payment gateway at {base_url}: {error}") from error

"""Reading a queued message without trusting it.

A message in a broker may be anything: Celery protocol 2 or 1, another serializer, a pickle,
random bytes, a truncated envelope, something another program put there. Decoding never
executes anything (pickle is never loaded), never raises, and bounds the memory it uses; what it
cannot read is reported as undecodable with its size, content type and the reason.
"""

import base64
import binascii
import json
import zlib

import orjson
from dataclasses import dataclass, field
from datetime import datetime

from monitors.recording.events import PUBLISHED_HEADER, as_datetime, epoch_datetime
from monitors.recording.payload import PayloadCleaner

MAX_DECODE_BYTES = 16 * 1024 * 1024


def load_json(text):
    """orjson is 3x faster, which a scan of a million messages feels; the standard library still
    reads what orjson refuses (NaN, integers past 64 bits), both of which kombu's JSON can write."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
PICKLE_TYPES = {"application/x-python-serialize", "application/python-pickle"}
GZIP_TYPES = {"application/x-gzip", "application/gzip", "zlib", "gzip"}


@dataclass
class QueuedMessage:
    """One message as Jobwatch shows it. `raw` is what the broker holds, kept for archiving."""

    size: int
    content_type: str = ""
    decodable: bool = False
    problem: str = ""
    task_id: str = ""
    task_name: str = ""
    args: list | None = None
    kwargs: dict | None = None
    payload_complete: bool | None = True  # None: arguments left raw (clean=False), not for display
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    published_at: datetime | None = None
    priority: int | None = None
    redelivered: bool = False
    delivery_tag: str = ""
    protocol: int | None = None
    position: int | None = None
    raw: bytes | str | None = field(default=None, repr=False)

    def age_seconds(self, now):
        return (now - self.published_at).total_seconds() if self.published_at else None


def undecodable(size, content_type, problem, raw=None, **known):
    return QueuedMessage(size=size, content_type=content_type or "", decodable=False, problem=problem, raw=raw, **known)


def decode_virtual_envelope(raw, clean=True):
    """A message as kombu's virtual transports (Redis, filesystem) store it: a JSON envelope with
    a base64 body. Never raises: a decoder bug shows as an undecodable message, not a broken page.

    clean=False keeps the arguments as they are (for detectors that look up the records a job
    needs); such a message must never be shown as it is.
    """
    try:
        return read_virtual_envelope(raw, clean)
    except Exception as error:
        return undecodable(len(raw), "", f"could not be decoded ({type(error).__name__})", raw)


def decode_body(*args, **kwargs):
    """Decode a message body by its content type (see read_body). Never raises."""
    try:
        return read_body(*args, **kwargs)
    except Exception as error:
        return undecodable(kwargs.get("size") or 0, "", f"could not be decoded ({type(error).__name__})")


def read_virtual_envelope(raw, clean=True):
    size = len(raw)
    if size > MAX_DECODE_BYTES:
        return undecodable(size, "", f"too large to decode ({size} bytes)", raw)
    try:
        envelope = load_json(raw)
    except (ValueError, UnicodeDecodeError, TypeError):
        return undecodable(size, "", "not a kombu envelope (not JSON)", raw)
    if not isinstance(envelope, dict) or "body" not in envelope:
        return undecodable(size, "", "not a kombu envelope (no body)", raw)
    properties = envelope.get("properties") if isinstance(envelope.get("properties"), dict) else {}
    body = envelope.get("body")
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body if isinstance(body, (str, bytes)) else "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return undecodable(size, envelope.get("content-type"), "body is not valid base64", raw)
    message = read_body(
        body,
        content_type=envelope.get("content-type"),
        content_encoding=envelope.get("content-encoding"),
        headers=envelope.get("headers"),
        properties=properties,
        size=size,
        clean=clean,
    )
    message.raw = raw
    return message


def read_body(body, content_type, content_encoding, headers, properties, size=None, clean=True, redelivered=False):
    """Celery fields from headers (protocol 2) or the body (protocol 1); the body decoded by its
    content type. Raises only on a bug, which the tests look for."""
    headers = headers if isinstance(headers, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    content_type = content_type if isinstance(content_type, str) else ""
    size = size if size is not None else len(body or b"")
    known = {
        "priority": as_int(properties.get("priority")),
        "delivery_tag": str(properties.get("delivery_tag") or ""),
        "redelivered": bool(redelivered or properties.get("redelivered")),
        "published_at": epoch_datetime(headers.get(PUBLISHED_HEADER)),
        # Protocol 2 carries identity in headers: show it even when the body is unreadable.
        "task_id": str(headers.get("id") or ""),
        "task_name": str(headers.get("task") or ""),
    }
    if content_type in PICKLE_TYPES:
        return undecodable(size, content_type, "pickle: never unpickled", **known)
    body, problem = decompress(body, headers.get("compression"))
    if problem:
        return undecodable(size, content_type, problem, **known)
    decoded, problem = deserialize(body, content_type, content_encoding)
    if problem:
        return undecodable(size, content_type, problem, **known)
    return celery_message(decoded, headers, size, content_type, known, PayloadCleaner.from_settings() if clean else None)


def decompress(body, compression):
    if not compression:
        return body, ""
    if not isinstance(compression, str) or compression not in GZIP_TYPES:
        return None, f"compressed with {compression}"
    try:
        data = body.encode() if isinstance(body, str) else body
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        out = inflater.decompress(data, MAX_DECODE_BYTES)
        if inflater.unconsumed_tail:
            return None, f"decompresses to more than {MAX_DECODE_BYTES} bytes"
        return out, ""
    except (zlib.error, TypeError, AttributeError):
        return None, "compressed body is corrupt"


def deserialize(body, content_type, content_encoding):
    """(value, problem). Only formats that cannot run code: JSON, and YAML / msgpack when their
    safe loaders are installed."""
    if isinstance(body, bytes):
        if content_type in ("application/x-msgpack", "application/msgpack"):
            return load_msgpack(body)
        try:
            body = body.decode(content_encoding if content_encoding in ("utf-8", "utf8", "ascii", "latin-1") else "utf-8")
        except (UnicodeDecodeError, LookupError):
            return None, "binary body"
    if not isinstance(body, str):
        return None, "empty body"
    if content_type in ("application/json", "", "text/plain"):
        try:
            return load_json(body), ""
        except (ValueError, TypeError):
            return None, "body is not valid JSON (truncated or corrupt)"
    if content_type in ("application/x-yaml", "application/yaml"):
        return load_yaml(body)
    return None, f"content type {content_type} is not decoded"


def load_yaml(text):
    try:  # optional: only a site whose tasks send YAML has PyYAML
        import yaml
    except ImportError:
        return None, "YAML body (PyYAML is not installed)"
    try:
        return yaml.safe_load(text), ""
    except yaml.YAMLError:
        return None, "body is not valid YAML"


def load_msgpack(data):
    try:  # optional: only a site whose tasks send msgpack has it
        import msgpack
    except ImportError:
        return None, "msgpack body (msgpack is not installed)"
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False), ""
    except Exception:  # msgpack raises several unrelated types on bad input
        return None, "body is not valid msgpack"


def celery_message(decoded, headers, size, content_type, known, cleaner):
    if "task" in headers and "id" in headers:
        if not (isinstance(decoded, (list, tuple)) and len(decoded) >= 2):
            return undecodable(size, content_type, "Celery protocol 2 headers but the body is not [args, kwargs, embed]", **known)
        args, kwargs, source, protocol = decoded[0], decoded[1], headers, 2
    elif isinstance(decoded, dict) and "task" in decoded and "id" in decoded:
        args, kwargs, source, protocol = decoded.get("args"), decoded.get("kwargs"), decoded, 1
    else:
        return undecodable(size, content_type, "not a Celery task message", **known)
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return undecodable(size, content_type, "task arguments are not a list and a dict", **known)
    if cleaner is not None:
        args, kwargs, _, complete = cleaner.clean(args, kwargs, measure=False)
    else:
        args, kwargs, complete = list(args), kwargs, None
    known.update(task_id=str(source.get("id") or ""), task_name=str(source.get("task") or ""))
    return QueuedMessage(
        size=size,
        content_type=content_type,
        decodable=True,
        args=args,
        kwargs=kwargs,
        payload_complete=complete,
        eta=as_datetime(source.get("eta")),
        expires=as_datetime(source.get("expires")),
        retries=as_int(source.get("retries")) or 0,
        protocol=protocol,
        **known,
    )


def as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

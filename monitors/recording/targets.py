"""Who a failure came from: the other side's address ("host:port"), the status it answered and
the kind of failure, read from the exception objects and the frames they were raised through —
never from their wording, which differs between libraries, versions and languages.

    failure_target(exception, traceback=None) -> (target, status, kind)

What is read, in this order:
- the exception, its __cause__/__context__ chain and the errors it wraps (URLError.reason,
  urllib3's MaxRetryError.reason, an exception passed as an argument), to a bounded depth;
- for the kind, their classes: OSError subclasses (refused, reset, timed out, name not
  resolved, TLS), network errnos, a database driver's own connection errors; for the status,
  .code, .status_code, .response.status_code, .smtp_code and the like. With neither, the other
  side did not fail and nothing is named;
- for the address, their attributes: a URL (urllib's HTTPError.url, requests' and httpx's
  .request.url and .response.url), a connection or pool (urllib3's .conn and .pool, psycopg's
  .pgconn), host and port (aiohttp);
- when those name none, the frames the errors were raised through, innermost first:
  socket.create_connection's `address`, `host` and `port` locals (smtplib, httpcore, urllib3),
  psycopg's connection parameters, a `self` with a host (http.client, urllib3, redis-py,
  smtplib's `_host`). Frames must still be alive: Celery clears them once the task_failure and
  task_retry handlers return.

Never raises, and never runs an object's __getattr__: it runs on every failure, inside the
worker's failure handling.
"""

import errno
import socket
import ssl
import sys
from types import GetSetDescriptorType, MemberDescriptorType
from urllib.error import HTTPError
from urllib.parse import urlsplit

KINDS = ("http", "connection", "timeout", "dns", "tls", "network")
NOTHING = ("", None, "")
# Far enough for any wrapping a library does (requests → urllib3 → socket is four deep).
CHAIN_DEPTH = 8
# Frames read in all, innermost first: the address is near the bottom of the stack.
FRAMES_READ = 60
DEFAULT_PORTS = {
    "http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "smtp": 25, "smtps": 465, "redis": 6379,
    "rediss": 6379, "postgres": 5432, "postgresql": 5432, "amqp": 5672, "amqps": 5671, "mysql": 3306,
    "mongodb": 27017, "ldap": 389, "ldaps": 636,
}
# The port a client library connects to when its parameters name none (the frame's package).
LIBRARY_PORTS = {"psycopg": 5432, "psycopg2": 5432, "redis": 6379, "smtplib": 25}
NETWORK_ERRNOS = {
    getattr(errno, name): kind
    for name, kind in (
        ("ECONNREFUSED", "connection"), ("ECONNRESET", "connection"), ("ECONNABORTED", "connection"),
        ("EPIPE", "connection"), ("ETIMEDOUT", "timeout"), ("ENETUNREACH", "network"),
        ("EHOSTUNREACH", "network"), ("ENETDOWN", "network"), ("EHOSTDOWN", "network"), ("ENETRESET", "network"),
    )
    if hasattr(errno, name)
}
# Library errors that carry no OSError of their own, by module and class name; looked up only
# in modules already imported (an error of theirs means they are).
LIBRARY_KINDS = (
    ("psycopg.errors", "ConnectionTimeout", "timeout"),
    ("httpx", "TimeoutException", "timeout"),
    ("requests.exceptions", "Timeout", "timeout"),
    ("urllib3.exceptions", "TimeoutError", "timeout"),
    ("redis.exceptions", "TimeoutError", "timeout"),
    ("redis.exceptions", "ConnectionError", "connection"),
    ("smtplib", "SMTPServerDisconnected", "connection"),
)
# A database driver's OperationalError with no SQLSTATE was raised by the driver itself: the
# server never answered (refused, unresolvable, cut off).
DRIVER_ERRORS = (("psycopg", "OperationalError"), ("psycopg2", "OperationalError"))
# libpq's CONNECTION_BAD, and the SQLSTATEs of a connection that failed or was cut by the server.
PGCONN_BAD = 1
LOST_CONNECTION_STATES = ("57P01", "57P02", "57P03")
# Locals that hold a database client's connection parameters (psycopg's connect, Django's
# get_new_connection), innermost attempt first.
PARAMETER_LOCALS = ("attempt", "conn_params", "params", "kwargs")
MISSING = object()


def failure_target(exception, traceback=None):
    """(target, status, kind) of a failure: "host:port" or "", an int status or None, one of
    KINDS or "". `traceback` adds frames when the exception's own are not all there is."""
    try:
        return _failure_target(exception, traceback)
    except Exception:
        return NOTHING


def _failure_target(exception, traceback):
    if not isinstance(exception, BaseException):
        return NOTHING
    chain = exception_chain(exception)
    status, kind = None, ""
    for error in chain:
        if status is None:
            status = status_of(error)
        kind = kind_of(error) or kind  # the innermost cause says most
    if status is None and not kind:
        # The other side did not fail (a bug, bad data): whatever address is at hand, it is
        # not the cause, and naming it would make a service of a programming error.
        return NOTHING
    if status is not None and status[1]:
        kind = "http"
    target = next(filter(None, map(address_of_error, chain)), None) or address_in_frames(chain, traceback)
    return (target or "", status[0] if status else None, kind)


# -- the chain of errors -------------------------------------------------------------------------


def exception_chain(exception):
    """The exception and what it wraps, outermost first, each once."""
    chain, seen, pending = [], set(), [exception]
    while pending and len(chain) < CHAIN_DEPTH:
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        chain.append(error)
        wrapped = [error.__cause__]
        if not error.__suppress_context__:
            wrapped.append(error.__context__)
        wrapped.append(field(error, "reason"))
        try:
            wrapped.extend(error.args[:3])
        except Exception:
            pass
        pending.extend(item for item in wrapped if isinstance(item, BaseException) and id(item) not in seen)
    return chain


# -- what the error objects say ------------------------------------------------------------------


def address_of_error(error):
    for name in ("url", "request", "response", "request_info"):
        value = field(error, name)
        if value is not None:
            target = address_of_url(value if name == "url" else field(value, "url"))
            if target:
                return target
    # urllib3's NewConnectionError keeps .conn; its deprecated .pool (a property) would warn.
    for name in ("conn", "pool"):
        value = own_field(error, name)
        if value is not None:
            target = address_of_endpoint(value)
            if target:
                return target
    pgconn = field(error, "pgconn")
    if pgconn is not None:
        target = address(field(pgconn, "host"), field(pgconn, "port"), default_port=5432)
        if target:
            return target
    port = field(error, "port")  # aiohttp's connection errors
    return address(field(error, "host"), port) if port is not None else None


def address_of_endpoint(endpoint):
    """A connection or pool object's "host:port" (urllib3's, http.client's, redis-py's)."""
    host = field(endpoint, "host")
    if host is None:
        host = field(endpoint, "_host")  # smtplib
    port = field(endpoint, "port")
    if port is None:
        port = field(endpoint, "default_port")
    return address(host, port, scheme=field(endpoint, "scheme"))


def address_of_url(url):
    if url is None:
        return None
    try:
        parts = urlsplit(url if isinstance(url, str) else str(url))
        port = parts.port
    except (ValueError, TypeError):
        return None
    return address(parts.hostname, port, scheme=parts.scheme) if parts.hostname else None


# (attribute, lowest plausible value, an HTTP status?): a bare `code` or `status` on an error
# counts only in the range of error statuses; a response's are its HTTP status.
ERROR_STATUS_FIELDS = (("status_code", 100, True), ("http_status", 100, True), ("code", 400, True),
                       ("status", 400, True), ("smtp_code", 200, False))
RESPONSE_STATUS_FIELDS = (("status_code", 100, True), ("status", 100, True))


def status_of(error):
    """(status, from HTTP?) or None."""
    if isinstance(error, HTTPError):
        return plausible(own_field(error, "code"), 100, True)
    response = field(error, "response")
    for holder, fields in ((response, RESPONSE_STATUS_FIELDS), (error, ERROR_STATUS_FIELDS)):
        if holder is None:  # not truthiness: a requests Response with an error status is falsy
            continue
        for name, lowest, http in fields:
            found = plausible(field(holder, name), lowest, http)
            if found:
                return found
    return None


def plausible(value, lowest, http):
    if type(value) is int and lowest <= value <= 599:
        return (value, http)
    return None


def kind_of(error):
    if isinstance(error, (ssl.SSLError, ssl.CertificateError)):
        return "tls"
    if isinstance(error, (socket.gaierror, socket.herror)):
        return "dns"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError):
        return "connection"
    if isinstance(error, OSError) and type(error.errno) is int and error.errno in NETWORK_ERRNOS:
        return NETWORK_ERRNOS[error.errno]
    for module_name, class_name, kind in LIBRARY_KINDS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(error, cls):
            return kind
    return database_connection_kind(error)


def database_connection_kind(error):
    state = field(error, "sqlstate") or field(error, "pgcode")
    if isinstance(state, str):
        return "connection" if state.startswith("08") or state in LOST_CONNECTION_STATES else ""
    pgconn = field(error, "pgconn")
    if pgconn is not None and field(pgconn, "status") == PGCONN_BAD:
        return "connection"
    for module_name, class_name in DRIVER_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(error, cls):
            return "connection"
    return ""


# -- what the frames say -------------------------------------------------------------------------


def address_in_frames(chain, traceback):
    """The first address the frames name, innermost first: the innermost error's frames, then
    its wrappers', then `traceback`'s."""
    tracebacks = [error.__traceback__ for error in reversed(chain)]
    if traceback is not None and all(traceback is not seen for seen in tracebacks):
        tracebacks.append(traceback)
    budget = FRAMES_READ
    for tb in tracebacks:
        frames = []
        while tb is not None and len(frames) < budget:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        budget -= len(frames)
        for frame in reversed(frames):
            target = address_in_frame(frame)
            if target:
                return target
        if budget <= 0:
            break
    return None


def address_in_frame(frame):
    variables = frame.f_locals  # a dict, or from Python 3.13 a mapping proxy
    if not variables:
        return None  # a cleared frame
    location = variables.get("address")
    if isinstance(location, (tuple, list)) and len(location) >= 2:
        target = address(location[0], location[1])
        if target:
            return target
    if "host" in variables and "port" in variables:
        target = address(variables["host"], variables["port"])
        if target:
            return target
    default_port = LIBRARY_PORTS.get(str(frame.f_globals.get("__name__", "")).partition(".")[0])
    for name in PARAMETER_LOCALS:
        parameters = variables.get(name)
        if isinstance(parameters, dict) and isinstance(parameters.get("host"), str):
            target = address(parameters["host"].split(",")[0], parameters.get("port"), default_port=default_port)
            if target:
                return target
    endpoint = variables.get("self")
    if endpoint is not None:
        return address_of_endpoint(endpoint)
    return None


# -- reading attributes safely, and writing the address ------------------------------------------


def own_field(obj, name):
    """An instance attribute, from the object's own __dict__ only."""
    try:
        return object.__getattribute__(obj, "__dict__").get(name)
    except Exception:
        return None


def field(obj, name):
    """obj.name when it is data: an instance attribute, a slot, a property or a class constant —
    never a method, and never through __getattr__ (a proxy would answer anything)."""
    try:
        own = object.__getattribute__(obj, "__dict__")
    except Exception:
        own = None
    if own is not None and name in own:
        return own[name]
    for cls in type(obj).__mro__:
        value = cls.__dict__.get(name, MISSING)
        if value is MISSING:
            continue
        try:
            if isinstance(value, property):
                return value.fget(obj) if value.fget is not None else None
            if isinstance(value, (MemberDescriptorType, GetSetDescriptorType)):
                return value.__get__(obj, type(obj))  # slots, and attributes of C extensions
        except Exception:
            return None
        return None if callable(value) or hasattr(value, "__get__") else value
    return None


def address(host, port, scheme=None, default_port=None):
    """"host:port" in one spelling: lower case, no credentials, IPv6 in brackets, the scheme's
    default port when none is given. None when there is no host."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return None
    host = host.strip().rpartition("@")[2].lower()
    if host.count(":") == 1:  # "host:port" in one string (urllib's Request.host)
        host, _, given = host.partition(":")
        port = port if port_number(port) else given
    host = host.strip("[]").rstrip(".")
    if not host or len(host) > 200 or any(character.isspace() for character in host):
        return None
    number = port_number(port)
    if number is None:
        number = DEFAULT_PORTS.get(str(scheme or "").lower(), default_port)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{number}" if number else host


def port_number(port):
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if type(port) is int and 0 < port < 65536:
        return port
    return None

"""What of a job's arguments is stored: secrets redacted, long values cut, the original size kept.

The recorded copy is for reading on a dashboard. It is marked incomplete whenever anything was
changed, so nothing ever replays a job from a redacted or truncated copy by mistake.
"""

import hashlib
import json

from django.core.signals import setting_changed

from monitors.conf import setting

REDACTED = "[redacted]"
MAX_DEPTH = 10
_cached = None


def forget_cleaner(setting=None, **kwargs):
    global _cached
    if setting in (None, "JOBWATCH"):
        _cached = None


setting_changed.connect(forget_cleaner)


class PayloadCleaner:
    def __init__(self, redact_keys, max_value_length, max_items):
        self.redact_words = tuple(normalise_key(key) for key in redact_keys)
        self.max_value_length = max_value_length
        self.max_items = max_items

    @classmethod
    def from_settings(cls):
        """The cleaner for the current settings, built once: it runs for every recorded event
        and every decoded message. Rebuilt when settings change (tests, override_settings)."""
        global _cached
        if _cached is None:
            _cached = cls(setting("REDACT_KEYS"), setting("MAX_VALUE_LENGTH"), setting("MAX_ITEMS"))
        return _cached

    def clean(self, args, kwargs, measure=True):
        """Return (args, kwargs, size_in_bytes or None, complete). Safe to share between threads."""
        if not args and not kwargs:
            return [], {}, payload_size(args, kwargs) if measure else None, True
        changes = []  # anything appended means the copy is not the original
        clean_args = self._value(list(args or ()), 0, changes)
        clean_kwargs = self._value(dict(kwargs or {}), 0, changes)
        return clean_args, clean_kwargs, payload_size(args, kwargs) if measure else None, not changes

    def is_secret(self, key):
        name = normalise_key(str(key))
        return any(word in name for word in self.redact_words)

    def _value(self, value, depth, changes):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            if "\x00" in value:
                # Neither PostgreSQL's jsonb nor its text can hold NUL; the recorded copy shows
                # Unicode's replacement character instead (the full payload, kept as JSON text,
                # keeps it escaped).
                changes.append("NUL")
                value = value.replace("\x00", "\ufffd")
            if len(value) > self.max_value_length:
                changes.append("truncated")
                return value[: self.max_value_length] + f"… [{len(value)} chars]"
            return value
        if depth >= MAX_DEPTH:
            changes.append("too deep")
            return "… [nested too deep]"
        if isinstance(value, dict):
            cleaned = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= self.max_items:
                    changes.append("cut")
                    cleaned["…"] = f"[{len(value) - self.max_items} more keys]"
                    break
                name = str(key)
                if "\x00" in name:
                    changes.append("NUL")
                    name = name.replace("\x00", "\ufffd")
                if self.is_secret(key):
                    changes.append("redacted")
                    cleaned[name] = REDACTED
                else:
                    cleaned[name] = self._value(item, depth + 1, changes)
            return cleaned
        if isinstance(value, (list, tuple)):
            cleaned = [self._value(item, depth + 1, changes) for item in value[: self.max_items]]
            if len(value) > self.max_items:
                changes.append("cut")
                cleaned.append(f"… [{len(value) - self.max_items} more items]")
            return cleaned
        # kombu's JSON encoder accepts datetimes, decimals, UUIDs; keep their text form.
        return self._value(str(value), depth, changes)


def normalise_key(key):
    return key.lower().replace("_", "").replace("-", "")


def payload_size(args, kwargs):
    return measure(args, kwargs)[0]


# Built once: json.dumps with any option builds a new encoder per call, and this runs per publish.
_MEASURING_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"), sort_keys=True)


def measure(args, kwargs):
    """(size in bytes, short hash) of the full arguments as JSON: one serialisation for both.
    Keys are sorted for the hash, so equal calls hash equal whatever their keyword order."""
    if not args and not kwargs:
        return _NO_ARGUMENTS
    try:
        text = _MEASURING_ENCODER.encode([args or [], kwargs or {}]).encode()
    except (TypeError, ValueError):
        return None, ""
    return len(text), hashlib.blake2b(text, digest_size=8).hexdigest()


_NO_ARGUMENTS = (len(b"[[],{}]"), hashlib.blake2b(b"[[],{}]", digest_size=8).hexdigest())


def shorten(text, limit):
    text = str(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text)} chars]"

"""What of a job's arguments is stored: secrets redacted, long values cut, the original size kept.

The recorded copy is for reading on a dashboard. It is marked incomplete whenever anything was
changed, so nothing ever replays a job from a redacted or truncated copy by mistake.
"""

import json

from monitors.conf import setting

REDACTED = "[redacted]"
MAX_DEPTH = 10


class PayloadCleaner:
    def __init__(self, redact_keys, max_value_length, max_items):
        self.redact_words = tuple(normalise_key(key) for key in redact_keys)
        self.max_value_length = max_value_length
        self.max_items = max_items

    @classmethod
    def from_settings(cls):
        return cls(setting("REDACT_KEYS"), setting("MAX_VALUE_LENGTH"), setting("MAX_ITEMS"))

    def clean(self, args, kwargs):
        """Return (args, kwargs, size_in_bytes, complete)."""
        self.complete = True
        clean_args = self._value(list(args or ()), 0)
        clean_kwargs = self._value(dict(kwargs or {}), 0)
        return clean_args, clean_kwargs, payload_size(args, kwargs), self.complete

    def is_secret(self, key):
        name = normalise_key(str(key))
        return any(word in name for word in self.redact_words)

    def _value(self, value, depth):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            if len(value) > self.max_value_length:
                self.complete = False
                return value[: self.max_value_length] + f"… [{len(value)} chars]"
            return value
        if depth >= MAX_DEPTH:
            self.complete = False
            return "… [nested too deep]"
        if isinstance(value, dict):
            cleaned = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= self.max_items:
                    self.complete = False
                    cleaned["…"] = f"[{len(value) - self.max_items} more keys]"
                    break
                if self.is_secret(key):
                    self.complete = False
                    cleaned[str(key)] = REDACTED
                else:
                    cleaned[str(key)] = self._value(item, depth + 1)
            return cleaned
        if isinstance(value, (list, tuple)):
            cleaned = [self._value(item, depth + 1) for item in value[: self.max_items]]
            if len(value) > self.max_items:
                self.complete = False
                cleaned.append(f"… [{len(value) - self.max_items} more items]")
            return cleaned
        # kombu's JSON encoder accepts datetimes, decimals, UUIDs; keep their text form.
        return self._value(str(value), depth)


def normalise_key(key):
    return key.lower().replace("_", "").replace("-", "")


def payload_size(args, kwargs):
    try:
        return len(json.dumps([args or [], kwargs or {}], default=str, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return None


def shorten(text, limit):
    text = str(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text)} chars]"

"""The query string, read in one place.

Each page declares what it reads, by name and kind, with `@query(...)`; the values reach the view
already parsed as `request.query`. A value that does not parse is a BadParameter, which
monitors/web/errors.py answers with 400 and a message naming the parameter (JSON on /api/) —
never a 500 from a ValueError deep in a view.

    @staff_only
    @query(before=Id(), window=Choice(WINDOWS, default="1h"), q=Text())
    def queue_detail(request, name):
        request.query["before"]   # an int, or None when not given

Kinds read the text the way an operator types it and refuse anything else: ids are ASCII digits
(a superscript "²" passes str.isdigit() but is no number), times and ages go through the jobs
filter's own parser, choices name the values they allow. The declaration doubles as the list the
URLconf fuzz test (tests/test_input_fuzz.py) feeds generated values to.
"""

from functools import wraps

# PostgreSQL's bigint: the largest id a keyset page can start before.
MAX_ID = 2**63 - 1
MAX_TEXT = 1000


class BadParameter(ValueError):
    """A query, form or path value that cannot be understood; says which and why."""

    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class Param:
    """One parameter's kind. `parse` gets the text as sent (never empty) and returns the value or
    raises ValueError with a message for the operator."""

    default = None

    def parse(self, text):
        raise NotImplementedError


class Text(Param):
    """Free text, stripped; bounded so a pasted log cannot become a query."""

    def __init__(self, default="", max_length=MAX_TEXT):
        self.default = default
        self.max_length = max_length

    def parse(self, text):
        text = text.strip()
        if len(text) > self.max_length:
            raise ValueError(f"at most {self.max_length} characters")
        return text or self.default


class Id(Param):
    """A row id (keyset paging: "before", "after"): 1 … 2⁶³−1, ASCII digits only."""

    def parse(self, text):
        return whole_number(text, 1, MAX_ID)


class Count(Param):
    """A position or count: 0 … maximum."""

    def __init__(self, default=0, maximum=10_000_000):
        self.default = default
        self.maximum = maximum

    def parse(self, text):
        return whole_number(text, 0, self.maximum)


class Choice(Param):
    """One of a fixed set of words (a dict's keys, or any iterable of strings)."""

    def __init__(self, choices, default=None):
        self.choices = list(choices)
        self.default = default

    def parse(self, text):
        text = text.strip()
        if text not in self.choices:
            raise ValueError(f"{text[:40]!r} is not one of {', '.join(map(str, self.choices))}")
        return text


class Flag(Param):
    """A switch: 1/true/yes/on or 0/false/no/off."""

    default = False
    WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

    def parse(self, text):
        word = text.strip().lower()
        if word not in self.WORDS:
            raise ValueError("1 or 0 (yes or no)")
        return self.WORDS[word]


def whole_number(text, low, high):
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text[:40]!r} is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


def ids(values, name):
    """Every value of a repeated form field as row ids (ticked checkboxes); a bad one is a
    BadParameter, not silently dropped, so an action never does less than it said."""
    try:
        return [whole_number(value, 1, MAX_ID) for value in values.getlist(name) if value.strip()]
    except ValueError as error:
        raise BadParameter(name, str(error)) from error


def read(values, spec):
    """{name: parsed value or the kind's default} for a QueryDict and a declaration."""
    parsed = {}
    for name, kind in spec.items():
        text = values.get(name, "")  # NUL anywhere was refused before the view ran (errors.py)
        if not text.strip():
            parsed[name] = kind.default
            continue
        try:
            parsed[name] = kind.parse(text)
        except ValueError as error:
            raise BadParameter(name, str(error)) from error
    return parsed


def query(**spec):
    """Declare and parse a view's query parameters (see the module's docstring)."""

    def declare(view):
        @wraps(view)
        def parsed(request, *args, **kwargs):
            request.query = read(request.GET, spec)
            return view(request, *args, **kwargs)

        parsed.query_parameters = spec
        return parsed

    return declare

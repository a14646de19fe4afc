"""One page, three shapes: the whole page for a browser, one fragment for an htmx request (the
part that polls or was swapped), and JSON under /api/ for scripts. Each view builds its data
once and says which fragments its template defines; this module picks the shape."""

import dataclasses
import datetime
import decimal
import uuid
from functools import wraps

from django.db import models
from django.http import JsonResponse
from django.shortcuts import render
from django_htmx.middleware import HtmxDetails

from monitors.web import partials


def respond(request, template, context, fragments=(), api=None, status=200):
    """`fragments`: the template's partial names, each also the id of the element it renders
    (htmx sends that id as HX-Target). `api`: the context keys the JSON carries (all by default)."""
    if is_api(request):
        keys = api if api is not None else [key for key in context if not key.startswith("_")]
        return JsonResponse({key: jsonable(context.get(key)) for key in keys}, status=status,
                            json_dumps_params={"ensure_ascii": False})
    htmx = details(request)
    if htmx and fragments:
        target = htmx.target if htmx.target in fragments else fragments[0]
        if not partials.BUILT_IN:  # Django 5.2 (see monitors/web/partials.py)
            response = partials.render_partial(request, template, target, context)
            response.status_code = status
            return response
        return render(request, f"{template}#{target}", context, status=status)
    return render(request, template, context, status=status)


def is_htmx(request):
    """An htmx request (django-htmx's reading of the HX-* headers; without its middleware too, as
    in a project that only added the app)."""
    return bool(details(request))


def htmx_target(request):
    """The id of the element an htmx request will swap (None for a plain request)."""
    htmx = details(request)
    return htmx.target if htmx else None


def details(request):
    found = getattr(request, "htmx", None)
    return found if found is not None else HtmxDetails(request)


def is_api(request):
    return getattr(request, "jobwatch_api", False)


def api_view(view):
    """The same view, answering in JSON (mounted under /api/)."""

    @wraps(view)
    def as_json(request, *args, **kwargs):
        request.jobwatch_api = True
        return view(request, *args, **kwargs)

    as_json.__name__ = f"{view.__name__}_api"
    return as_json


def jsonable(value):
    """Plain JSON types from what views hand to templates: model instances (their fields),
    dataclasses, dicts, lists, times, decimals. Text stays text: JSON escapes it for scripts."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if hasattr(value, "as_dict"):
        return jsonable(value.as_dict())
    if isinstance(value, models.Model):
        # The fields the view loaded: a deferred one would cost a query per row and field.
        deferred = value.get_deferred_fields()
        return {field.attname: jsonable(getattr(value, field.attname))
                for field in value._meta.concrete_fields if field.attname not in deferred}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, models.QuerySet)) or hasattr(value, "__iter__"):
        return [jsonable(item) for item in value]
    if hasattr(value, "__dict__"):
        return {key: jsonable(item) for key, item in vars(value).items() if not key.startswith("_")}
    return str(value)

"""How every Jobwatch URL answers a request it cannot serve: in the shape the caller asked for,
with the reason, and never with a 500 for bad input.

- A value that does not parse (query, form or path; monitors/web/params.py) → 400 naming it.
- A permission the user lacks → 403 naming the permission (Django's own 403 page says nothing,
  and a host project's may not show the reason either).
- Something that does not exist → 404; on /api/ as JSON, like every other answer there.

urls.py wraps every route in `answers_errors`, so no view has to remember to.
"""

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import render

from monitors.web.params import BadParameter
from monitors.web.respond import is_api


def answers_errors(view):
    @wraps(view)
    def answered(request, *args, **kwargs):
        try:
            refuse_nul(kwargs.items(), request.GET.lists(), request.POST.lists() if request.method == "POST" else ())
            return view(request, *args, **kwargs)
        except BadParameter as error:
            return refusal(request, 400, "Bad request", str(error), parameter=error.name)
        except PermissionDenied as error:
            permission = getattr(error, "permission", "")
            message = str(error) or "You may not do this."
            return refusal(request, 403, "Not allowed", message, permission=permission)
        except Http404 as error:
            if not is_api(request):
                raise  # the host project's 404 page, with its navigation
            return refusal(request, 404, "Not found", str(error) or "No such thing.")

    return answered


def refuse_nul(path, query, form):
    """PostgreSQL text cannot hold NUL: a %00 anywhere would otherwise fail in the database driver."""
    for name, value in path:
        if isinstance(value, str) and "\x00" in value:
            raise BadParameter(name, "contains a NUL character")
    for pairs in (query, form):
        for name, values in pairs:
            if "\x00" in name or any("\x00" in value for value in values):
                raise BadParameter(name.replace("\x00", "\\0"), "contains a NUL character")


def refusal(request, status, title, message, **details):
    if is_api(request):
        body = {"error": message, **{key: value for key, value in details.items() if value}}
        return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})
    return render(request, "jobwatch/refusal.html", {"status": status, "title": title, "message": message, **details},
                  status=status)


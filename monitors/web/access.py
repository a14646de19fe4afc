"""Who may see Jobwatch: logged-in staff, everywhere. Anonymous visitors are sent to log in (the
JSON API answers 401 instead); a logged-in user who is not staff is refused (403), not sent round
the login page again."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django_htmx.http import HttpResponseClientRedirect


def staff_only(view):
    @wraps(view)
    def checked(request, *args, **kwargs):
        api = getattr(request, "jobwatch_api", False)
        if not request.user.is_authenticated:
            if api:
                return JsonResponse({"error": "log in first (a staff user's session)"}, status=401)
            login = redirect_to_login(request.headers.get("HX-Current-URL") or request.get_full_path())
            if request.headers.get("HX-Request") == "true":
                # A poll after the session expired: the whole page goes to the login form, rather
                # than the login form into one fragment of the page.
                return HttpResponseClientRedirect(login["Location"])
            return login
        if not (request.user.is_active and request.user.is_staff):
            if api:
                return JsonResponse({"error": "Jobwatch is for staff users."}, status=403)
            raise PermissionDenied("Jobwatch is for staff users.")
        return view(request, *args, **kwargs)

    return checked

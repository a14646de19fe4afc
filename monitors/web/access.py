"""Who may see Jobwatch: logged-in staff, everywhere. Anonymous visitors are sent to log in;
a logged-in user who is not staff is refused (403), not sent round the login page again."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied


def staff_only(view):
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("Jobwatch is for staff users.")
        return view(request, *args, **kwargs)

    return checked

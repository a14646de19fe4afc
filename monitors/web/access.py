"""Who may see Jobwatch: logged-in staff, everywhere."""

from django.contrib.admin.views.decorators import staff_member_required


def staff_only(view):
    return staff_member_required(view)

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="monitors:overview", permanent=False)),
    path("admin/", admin.site.urls),
    path("jobwatch/", include("monitors.urls")),
    path("demo/", include("demo.urls")),
]

from django.contrib import admin
from django.contrib.auth import views as auth
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="monitors:overview", permanent=False)),
    # The site's own sign-in (templates/registration/login.html); sign-out is a POST, as Django asks.
    path("accounts/login/", auth.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("jobwatch/", include("monitors.urls")),
    path("demo/", include("demo.urls")),
]

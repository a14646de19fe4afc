from django.urls import path

from demo import views

app_name = "demo"

urlpatterns = [
    path("orders/<int:order_id>/resend-confirmation/", views.resend_confirmation, name="resend-confirmation"),
]

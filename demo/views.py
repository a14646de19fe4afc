"""A view that enqueues from a request: the "delay() in a view" origin."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from demo import tasks
from demo.models import Order


@staff_member_required
@require_POST
def resend_confirmation(request, order_id):
    order = get_object_or_404(Order, pk=order_id)
    result = tasks.send_order_confirmation.delay(order.pk)
    return JsonResponse({"task_id": result.id})

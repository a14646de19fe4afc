"""Record references: which argument of a task is the primary key of which model."""

import pytest
from celery import Celery
from django.test import override_settings

from monitors.references import references, resolve_references

app = Celery("references-test", set_as_current=False)


@app.task
@references(order_id="shop.Order", customer_id="shop.Customer")
def send_invoice(order_id, customer_id=None, note=""):
    pass


@references(invoice_id="billing.Invoice")
@app.task(bind=True)
def bound_task(self, invoice_id):
    pass


def test_it_reads_references_by_position_and_by_keyword():
    found = resolve_references(send_invoice.name, send_invoice, [12], {"customer_id": 5})
    assert found == [
        {"arg": "order_id", "model": "shop.Order", "pk": 12},
        {"arg": "customer_id", "model": "shop.Customer", "pk": 5},
    ]


def test_it_skips_references_the_call_does_not_carry():
    assert resolve_references(send_invoice.name, send_invoice, [12], {}) == [{"arg": "order_id", "model": "shop.Order", "pk": 12}]


def test_it_works_on_bound_tasks_decorated_outside_the_task_decorator():
    assert resolve_references(bound_task.name, bound_task, ["INV-1"], {}) == [{"arg": "invoice_id", "model": "billing.Invoice", "pk": "INV-1"}]


@override_settings(JOBWATCH={"RECORD_REFERENCES": {"vendor.sync": {"0": "vendor.Account", "user_id": "auth.User"}}})
def test_it_takes_references_from_settings_for_tasks_it_cannot_decorate():
    assert resolve_references("vendor.sync", None, [3], {"user_id": 9}) == [
        {"arg": "0", "model": "vendor.Account", "pk": 3},
        {"arg": "user_id", "model": "auth.User", "pk": 9},
    ]


def test_it_returns_nothing_for_tasks_without_references():
    assert resolve_references("other", None, [1], {}) is None


def test_it_refuses_a_model_that_is_not_app_label_dot_model():
    with pytest.raises(ValueError, match="app_label.Model"):
        references(order_id="Order")

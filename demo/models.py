"""A small shop whose callbacks misbehave on purpose, the way real apps do (see
shared/background): the Jobwatch demo workload and the tests' ground truth."""

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField()
    tier = models.CharField(max_length=20, default="standard")
    last_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.name


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default="placed")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"order {self.pk}"


class Payment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="payments")
    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default="pending")
    gateway_reference = models.CharField(max_length=64, blank=True)

    def __str__(self):
        return f"payment {self.pk}"

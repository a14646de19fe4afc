"""Record references: which task argument is the primary key of which model.

The orphan detector needs to know that `send_invoice(order_id)` needs the row `shop.Order(order_id)`.
Say so with the decorator on tasks you own:

    @app.task
    @references(order_id="shop.Order")
    def send_invoice(order_id): ...

or, for tasks you cannot edit, in settings:

    JOBWATCH = {"RECORD_REFERENCES": {"billing.tasks.sync": {"invoice_id": "billing.Invoice", "0": "auth.User"}}}

Keys are argument names, or positions ("0") for tasks whose signature cannot be read.
"""

import inspect
from functools import lru_cache

from monitors.conf import setting

ATTRIBUTE = "jobwatch_references"


def references(**argument_models):
    """Mark task arguments as primary keys of models ("app_label.Model")."""
    for model in argument_models.values():
        if not isinstance(model, str) or model.count(".") != 1:
            raise ValueError(f"references() takes 'app_label.Model' strings, not {model!r}")

    def mark(task_or_function):
        setattr(task_or_function, ATTRIBUTE, dict(argument_models))
        return task_or_function

    return mark


def declared_references(task_name, task):
    """The argument→model mapping for a task: settings first, then the decorator."""
    configured = setting("RECORD_REFERENCES").get(task_name)
    if configured:
        return configured
    if task is None:
        return None
    return getattr(task, ATTRIBUTE, None) or getattr(getattr(task, "run", None), ATTRIBUTE, None)


def resolve_references(task_name, task, args, kwargs):
    """[{"arg", "model", "pk"}] for the references this call carries, or None."""
    mapping = declared_references(task_name, task)
    if not mapping:
        return None
    args = list(args or ())
    kwargs = kwargs or {}
    bound = bind_arguments(task, args, kwargs)
    found = []
    for argument, model in mapping.items():
        key = str(argument)
        if key.isdigit():
            index = int(key)
            value = args[index] if index < len(args) else None
        elif key in kwargs:
            value = kwargs[key]
        else:
            value = bound.get(key)
        if value is not None:
            found.append({"arg": key, "model": model, "pk": value})
    return found or None


def bind_arguments(task, args, kwargs):
    signature = task_signature(task) if task is not None else None
    if signature is None:
        return {}
    try:
        return dict(signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return {}


@lru_cache(maxsize=1024)
def task_signature(task):
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError, AttributeError):
        return None

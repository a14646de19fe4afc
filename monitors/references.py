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
    found = []
    for argument, model, position in locate(task, tuple(mapping.items())):
        if argument in kwargs:
            value = kwargs[argument]
        elif position is not None and position < len(args):
            value = args[position]
        else:
            value = None
        if value is not None:
            found.append({"arg": argument, "model": model, "pk": value})
    return found or None


@lru_cache(maxsize=1024)
def locate(task, mapping):
    """((argument, model, position), …): where each referenced argument sits when passed by
    position. Worked out once per task from its signature, since a scan resolves references for
    every queued message."""
    signature = task_signature(task) if task is not None else None
    positions = {}
    if signature is not None:
        for index, parameter in enumerate(signature.parameters.values()):
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                positions[parameter.name] = index
    located = []
    for argument, model in mapping:
        key = str(argument)
        located.append((key, model, int(key) if key.isdigit() else positions.get(key)))
    return tuple(located)


@lru_cache(maxsize=1024)
def task_signature(task):
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError, AttributeError):
        return None

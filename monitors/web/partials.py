"""Template partials on Django 5.2.

The pages use Django 6.0's built-in partials: `{% partialdef name inline %}` in the templates, and
"template.html#name" to render one of them alone (an htmx fragment). Django 5.2 has neither, and
the project that installs Jobwatch should not have to configure anything for them (a loader
option, a builtin, another app). So on Django < 6.0 `{% load jobwatch %}` adds this `partialdef`
tag, which stores each partial where Django 6.0's does (the template's extra_data["partials"]),
and respond.py renders a fragment with render_partial(). On Django 6.0 and later neither is used:
the built-ins are. Only what Jobwatch's templates use is here (no `{% partial %}` tag).
"""

import django
from django.http import HttpResponse
from django.template import TemplateDoesNotExist, TemplateSyntaxError, loader
from django.template.base import Node
from django.template.context import make_context

BUILT_IN = django.VERSION >= (6, 0)


class PartialTemplate:
    """The part of a template between partialdef and endpartialdef, rendered like a template of
    its own (as Django 6.0's django.template.base.PartialTemplate)."""

    def __init__(self, nodelist, origin, name):
        self.nodelist = nodelist
        self.origin = origin
        self.name = name
        self.engine = None  # set by render_partial(): context processors come from the engine

    def get_exception_info(self, exception, token):
        return self.origin.loader.get_template(self.origin.template_name).get_exception_info(exception, token)

    def render(self, context):
        with context.render_context.push_state(self):
            if context.template is None:
                with context.bind_template(self):
                    context.template_name = self.name
                    return self.nodelist.render(context)
            return self.nodelist.render(context)


class PartialDefNode(Node):
    def __init__(self, nodelist, inline):
        self.nodelist = nodelist
        self.inline = inline

    def render(self, context):
        return self.nodelist.render(context) if self.inline else ""


def partialdef(parser, token):
    """{% partialdef name [inline] %} … {% endpartialdef [name] %}"""
    bits = token.split_contents()
    if len(bits) not in (2, 3) or (len(bits) == 3 and bits[2] != "inline"):
        raise TemplateSyntaxError("usage: {% partialdef name [inline] %}")
    name = bits[1]
    nodelist = parser.parse(("endpartialdef", f"endpartialdef {name}"))
    parser.delete_first_token()
    partials = parser.extra_data.setdefault("partials", {})
    if name in partials:
        raise TemplateSyntaxError(f"Partial '{name}' is already defined in the '{parser.origin.name}' template.")
    partials[name] = PartialTemplate(nodelist, parser.origin, name)
    return PartialDefNode(nodelist, inline=len(bits) == 3)


def render_partial(request, template_name, partial_name, context):
    """What render(request, f"{template_name}#{partial_name}", context) answers on Django 6.0+."""
    template = loader.get_template(template_name).template  # the Template inside the backend's wrapper
    partial = template.extra_data.get("partials", {}).get(partial_name)
    if partial is None:
        raise TemplateDoesNotExist(f"{template_name}#{partial_name}")
    partial.engine = template.engine
    return HttpResponse(partial.render(make_context(context, request, autoescape=template.engine.autoescape)))

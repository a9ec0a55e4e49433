"""Renders a Jinja2 template the way Ansible's template module does, for
scripts/stack: the local stacks' nginx configuration comes from the same
templates as the fleet's (conf/nginx/, docs/architecture.md).

    /usr/bin/python3 scripts/lib/render_template.py TEMPLATE OUT < VARS.json

VARS.json holds every variable the template uses; an undefined one is an
error, not an empty string. What Ansible adds and the templates use:
`ansible_managed` (a default is given here) and the `comment` filter.
Templates included with {% include %} are looked up next to TEMPLATE.
OUT is replaced atomically.
"""

import json
import os
import sys

import jinja2


def comment(text):
    """Ansible's `comment` filter, default (plain) style."""
    lines = ["#"] + ["# " + line if line else "#" for line in text.splitlines()] + ["#"]
    return "\n".join(lines)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: render_template.py TEMPLATE OUT < VARS.json")
    template, out = sys.argv[1], sys.argv[2]
    variables = json.load(sys.stdin)
    name = os.path.basename(template)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    where = os.path.relpath(os.path.dirname(os.path.abspath(template)), root)
    variables.setdefault(
        "ansible_managed",
        "Rendered by scripts/stack from the templates in %s/: edit those, not this file." % where,
    )
    # Ansible's template module settings: trim_blocks, no lstrip_blocks,
    # the trailing newline kept.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(template))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["comment"] = comment
    try:
        text = env.get_template(name).render(variables)
    except jinja2.TemplateError as e:
        sys.exit("%s: %s" % (template, e))
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()

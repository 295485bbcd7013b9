"""MkDocs hooks: the pages that are generated from the code when the site is built.

- `<!-- settings-table -->` in a page becomes the table of every `common.config.Settings` field
  (environment name, type, default, description), read from the class itself;
- the gateway's OpenAPI spec, as `gateway.app.create_app(...).openapi()` produces it (no service
  is started for it), is published as `openapi.json`, and written for the `neoteroi.mkdocsoad`
  plugin to `docs/.openapi.json` (git-ignored, rewritten by every build; MkDocs leaves dotfiles
  out of the site), which the API reference page names in `[OAD(.openapi.json)]`.

Registered under `hooks:` in mkdocs.yml; nothing here reaches the network.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `mkdocs build` from anywhere imports the project
    sys.path.insert(0, str(REPO_ROOT))

SETTINGS_MARKER = "<!-- settings-table -->"
SPEC_FILE = "openapi.json"  # published on the site
RENDERED_SPEC_FILE = ".openapi.json"  # in docs/, what the plugin renders
SPEC_TITLE = re.compile(r'^# (.*<span class="api-version">)', re.M)

_spec: dict[str, Any] | None = None


# ---- settings ----------------------------------------------------------------------------


def settings_rows() -> list[dict[str, str]]:
    """One row per `Settings` field, in the class's order: env name, type, default, description."""
    from common.config import Settings

    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        bounds = [_bound(m) for m in field.metadata]
        description = (field.description or "").strip()
        if any(bounds):
            description += f" ({', '.join(b for b in bounds if b)})"
        rows.append(
            {
                "env": (alias or name).upper(),
                "type": _type_name(field.annotation),
                "default": _default(field.default),
                "description": description,
            }
        )
    return rows


def settings_table() -> str:
    lines = ["| environment variable | type | default | description |", "|---|---|---|---|"]
    for row in settings_rows():
        cells = [f"`{row['env']}`", row["type"], row["default"], row["description"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _bound(constraint: Any) -> str:
    for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
        value = getattr(constraint, attr, None)
        if value is not None:
            return f"{sign} {_number(value)}"
    return ""


def _type_name(annotation: Any) -> str:
    return {str: "text", int: "integer", float: "number", bool: "true / false", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(value: Any) -> str:
    if isinstance(value, Path):
        try:  # the build machine's checkout says nothing to a reader
            return f"`./{value.relative_to(REPO_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float | int):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|").strip()


# ---- the OpenAPI spec --------------------------------------------------------------------


def openapi_spec() -> dict[str, Any]:
    """The gateway's OpenAPI spec, built once per build with default settings."""
    global _spec
    if _spec is None:
        from common.config import Settings
        from gateway.app import create_app

        with tempfile.TemporaryDirectory() as data_dir:  # create_app writes nothing; be sure
            _spec = create_app(Settings(_env_file=None, data_dir=data_dir)).openapi()
    return _spec


def renderable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec in the words essentials-openapi 1.4 renders right (the published
    `openapi.json` stays as the gateway serves it): nullable types in OAS 3.1's form, and
    each API-key scheme named by its header, as the renderer lists a scheme's name as the
    header to send."""
    spec = nullable_as_type_list(spec)
    schemes = spec.get("components", {}).get("securitySchemes", {})
    header = {key: s["name"] for key, s in schemes.items() if s.get("type") == "apiKey"}
    if header:
        schemes = {header.get(key, key): s for key, s in schemes.items()}
        spec["components"]["securitySchemes"] = schemes
        operations = [op for item in spec.get("paths", {}).values() for op in item.values()]
        for holder in [spec, *operations]:
            if isinstance(holder, dict) and "security" in holder:
                holder["security"] = [
                    {header.get(key, key): scopes for key, scopes in requirement.items()}
                    for requirement in holder["security"]
                ]
    return spec


def nullable_as_type_list(node: Any) -> Any:
    """A copy of `node` with pydantic's `anyOf: [S, {"type": "null"}]` written as
    `type: [S's type, "null"]`: essentials-openapi shows no type at all for an `anyOf`, and
    "number | null" for the list. A nullable `$ref` becomes the `$ref` (its description says
    when it is null). Anything else is left as it is."""
    if isinstance(node, list):
        return [nullable_as_type_list(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: nullable_as_type_list(value) for key, value in node.items()}
    options = node.get("anyOf", [])
    others = [s for s in options if s != {"type": "null"}]
    if len(options) == 2 and len(others) == 1:
        (schema,) = others
        if isinstance(schema.get("type"), str):
            schema = {**schema, "type": [schema["type"], "null"]}
        if "type" in schema or "$ref" in schema:
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **schema}
    return node


# ---- MkDocs events ----------------------------------------------------------------------


def on_pre_build(config):
    """Write the spec the plugin renders; only when it changed, so `mkdocs serve`, which
    watches docs/, does not rebuild for ever."""
    path = Path(config["docs_dir"]) / RENDERED_SPEC_FILE
    text = json.dumps(renderable_spec(openapi_spec()), indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def on_files(files, config):
    """Publish the spec as `openapi.json` beside the pages (so a link to it resolves)."""
    from mkdocs.structure.files import File

    spec = json.dumps(openapi_spec(), indent=2)
    files.append(File.generated(config, SPEC_FILE, content=spec))
    return files


@event_priority(-100)  # after the plugin has rendered `[OAD(...)]`
def on_page_markdown(markdown, page, config, files):
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_table())
    # The rendered spec opens with its title as a second `#` heading, under which Material's
    # table of contents would show nothing: it becomes a section of the page.
    return SPEC_TITLE.sub(r"## \1", markdown, count=1)

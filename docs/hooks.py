"""MkDocs hooks: the pages that are generated from the code when the site is built.

- `<!-- settings-table -->` in a page becomes the table of every `common.config.Settings` field
  (environment name, type, default, description), read from the class itself;
- `<!-- openapi -->` becomes the gateway's REST API reference, rendered from the OpenAPI spec
  that `gateway.app.create_app(...).openapi()` produces (no service is started for it), and the
  spec itself is published beside it as `openapi.json`.

Registered under `hooks:` in mkdocs.yml; nothing here reaches the network.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `mkdocs build` from anywhere imports the project
    sys.path.insert(0, str(REPO_ROOT))

SETTINGS_MARKER = "<!-- settings-table -->"
OPENAPI_MARKER = "<!-- openapi -->"
SPEC_FILE = "openapi.json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

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


# ---- the OpenAPI reference --------------------------------------------------------------


def openapi_spec() -> dict[str, Any]:
    """The gateway's OpenAPI spec, built once per build with default settings."""
    global _spec
    if _spec is None:
        from common.config import Settings
        from gateway.app import create_app

        with tempfile.TemporaryDirectory() as data_dir:  # create_app writes nothing; be sure
            _spec = create_app(Settings(_env_file=None, data_dir=data_dir)).openapi()
    return _spec


class OpenApiMarkdown:
    """Renders an OpenAPI 3 spec as markdown: operations by tag (parameters, request body,
    responses with their codes, headers and schemas), then every schema of the components."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})

    def render(self) -> str:
        out = [self.intro()]
        descriptions = {t["name"]: t.get("description", "") for t in self.spec.get("tags", [])}
        for tag, operations in self.by_tag().items():
            out.append(f"## {tag} {{#{_slug('tag-' + tag)}}}\n")
            if descriptions.get(tag):
                out.append(descriptions[tag].strip() + "\n")
            out.extend(self.operation(path, method, op) for path, method, op in operations)
        if self.schemas:
            out.append("## Schemas {#schemas}\n")
            out.extend(self.schema_section(name) for name in sorted(self.schemas))
        return "\n".join(out)

    def intro(self) -> str:
        info = self.spec.get("info", {})
        lines = [
            f"Generated from the gateway's OpenAPI {self.spec.get('openapi', '')} spec when this "
            f"site was built: **{info.get('title', '')}** {info.get('version', '')}. The spec "
            f"itself: [{SPEC_FILE}]({SPEC_FILE}); a running gateway serves it at `/openapi.json` "
            "and its interactive form at `/docs`.\n"
        ]
        if info.get("description"):
            lines.append(info["description"].strip() + "\n")
        schemes = self.spec.get("components", {}).get("securitySchemes", {})
        if schemes:
            lines.append("**Authentication**\n")
            for name, scheme in schemes.items():
                scheme = self.resolve(scheme)
                where = (
                    f"the `{scheme['name']}` {scheme.get('in', '')}"
                    if scheme.get("type") == "apiKey"
                    else " ".join(str(scheme.get(k, "")) for k in ("type", "scheme")).strip()
                )
                text = _oneline(scheme.get("description", ""))
                lines.append(f"- `{name}`: {where}" + (f". {text}" if text else ""))
            lines.append("")
        return "\n".join(lines)

    def by_tag(self) -> dict[str, list[tuple[str, str, dict]]]:
        tags = {t["name"]: t for t in self.spec.get("tags", [])}
        groups: dict[str, list[tuple[str, str, dict]]] = {name: [] for name in tags}
        for section in ("paths", "webhooks"):
            for path, item in self.spec.get(section, {}).items():
                item = self.resolve(item)
                for method in HTTP_METHODS:
                    if method in item:
                        op = dict(item[method])
                        op["parameters"] = item.get("parameters", []) + op.get("parameters", [])
                        name = (op.get("tags") or ["Webhooks" if section == "webhooks" else ""])[0]
                        groups.setdefault(name or "Endpoints", []).append((path, method, op))
        # the spec's tag order, then tags in order of first use
        return {name: ops for name, ops in groups.items() if ops}

    def operation(self, path: str, method: str, op: dict) -> str:
        anchor = _slug(f"{method}-{path}")
        out = [f"### `{method.upper()} {path}` {{#{anchor}}}\n"]
        if op.get("deprecated"):
            out.append("**Deprecated.**\n")
        if op.get("summary"):
            out.append(f"**{_oneline(op['summary'])}**\n")
        if op.get("description"):
            out.append(op["description"].strip() + "\n")
        if "security" in op or "security" in self.spec:
            needs = op.get("security", self.spec.get("security"))
            names = [n for req in needs or [] for n in req]
            if names:
                out.append("Needs " + " or ".join(f"`{n}`" for n in names) + ".\n")
        params = [self.resolve(p) for p in op.get("parameters", [])]
        if params:
            out.append("| parameter | in | type | required | description |")
            out.append("|---|---|---|---|---|")
            for p in params:
                schema = p.get("schema", {})
                cells = [
                    f"`{p['name']}`",
                    p.get("in", ""),
                    self.type_of(schema),
                    "yes" if p.get("required") else "no",
                    self.describe(p.get("description") or schema.get("description", ""), schema),
                ]
                out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            out.append("")
        if "requestBody" in op:
            out.append(self.request_body(self.resolve(op["requestBody"])))
        if op.get("responses"):
            out.append(self.responses(op["responses"]))
        return "\n".join(out)

    def request_body(self, body: dict) -> str:
        required = "required" if body.get("required") else "optional"
        out = [f"**Request body** ({required})" + _sentence(body.get("description", "")) + "\n"]
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            out.append(f"`{media}`: {self.type_of(schema)}\n")
            resolved = self.resolve(schema)
            if resolved.get("properties"):
                out.append(self.properties_table(resolved))
            out.append(self.examples(content))
        return "\n".join(out)

    def responses(self, responses: dict) -> str:
        out = ["**Responses**\n", "| code | description | content |", "|---|---|---|"]
        examples = []
        for code, response in sorted(responses.items(), key=lambda kv: _code_order(kv[0])):
            response = self.resolve(response)
            content = [
                f"`{media}`" + (f": {self.type_of(c['schema'])}" if c.get("schema") else "")
                for media, c in response.get("content", {}).items()
            ]
            headers = [
                f"header `{name}`" + _sentence(self.resolve(h).get("description", ""))
                for name, h in response.get("headers", {}).items()
            ]
            cells = [f"`{code}`", response.get("description", ""), "<br>".join(content + headers)]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            for media, c in response.get("content", {}).items():
                if text := self.examples(c):
                    examples.append(f"Example `{code}` `{media}`:\n\n{text}")
        out.append("")
        return "\n".join(out + examples)

    def examples(self, content: dict) -> str:
        values = []
        if "example" in content:
            values.append(content["example"])
        for example in content.get("examples", {}).values():
            example = self.resolve(example)
            if "value" in example:
                values.append(example["value"])
        return "".join(f"```json\n{json.dumps(v, indent=2)}\n```\n" for v in values)

    def schema_section(self, name: str) -> str:
        schema = self.schemas[name]
        out = [f"### {schema.get('title', name)} {{#{_schema_anchor(name)}}}\n"]
        if schema.get("description"):
            out.append(schema["description"].strip() + "\n")
        if schema.get("properties"):
            out.append(self.properties_table(schema))
        else:
            out.append(f"{self.type_of({k: v for k, v in schema.items() if k != 'title'})}\n")
        return "\n".join(out)

    def properties_table(self, schema: dict) -> str:
        required = set(schema.get("required", []))
        out = ["| field | type | required | description |", "|---|---|---|---|"]
        for prop, sub in schema["properties"].items():
            cells = [
                f"`{prop}`",
                self.type_of(sub),
                "yes" if prop in required else "no",
                self.describe(sub.get("description", ""), sub),
            ]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(out) + "\n"

    def describe(self, text: str, schema: dict) -> str:
        """A description followed by what the schema adds: default, bounds."""
        extra = []
        if "default" in schema:
            extra.append(f"default `{json.dumps(schema['default'])}`")
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
            ("minLength", "length ≥"),
            ("maxLength", "length ≤"),
            ("minItems", "items ≥"),
            ("maxItems", "items ≤"),
        ):
            if key in schema and not isinstance(schema[key], bool):
                extra.append(f"{sign} {schema[key]}")
        if "pattern" in schema:
            extra.append(f"pattern `{schema['pattern']}`")
        text = _oneline(text)
        return (text + (f" ({'; '.join(extra)})" if extra else "")).strip()

    def type_of(self, schema: dict) -> str:
        """A short markdown name of a schema's type, schemas linked to their section."""
        if not schema:
            return "any"
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name in self.schemas:
                return f"[{name}](#{_schema_anchor(name)})"
            return self.type_of(self.resolve(schema))
        for key, joiner in (("anyOf", " or "), ("oneOf", " or "), ("allOf", " and ")):
            if key in schema:
                return joiner.join(self.type_of(s) for s in schema[key])
        if "enum" in schema:
            return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        if "const" in schema:
            return f"`{json.dumps(schema['const'])}`"
        kind = schema.get("type", "object" if "properties" in schema else "any")
        if isinstance(kind, list):
            return " or ".join(self.type_of({**schema, "type": k}) for k in kind)
        if kind == "array":
            return f"array of {self.type_of(schema.get('items', {}))}"
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return f"object of {self.type_of(schema['additionalProperties'])}"
        if fmt := schema.get("format") or schema.get("contentMediaType"):
            return f"{kind} ({fmt})"
        return str(kind)

    def resolve(self, node: Any) -> Any:
        """Follow local `$ref`s (`#/components/...`) to what they name."""
        seen = set()
        while isinstance(node, dict) and "$ref" in node and node["$ref"] not in seen:
            seen.add(node["$ref"])
            target: Any = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            node = target
        return node


def openapi_markdown(spec: dict[str, Any]) -> str:
    return OpenApiMarkdown(spec).render()


def _code_order(code: str) -> tuple[int, str]:
    """2XX, 200, 202 … 599, then `default`."""
    return (int(code.upper().replace("X", "0")) if code[:1].isdigit() else 1000, code)


def _schema_anchor(name: str) -> str:
    return _slug("schema-" + name)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _oneline(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _sentence(text: str) -> str:
    text = _oneline(text)
    return f": {text}" if text else ""


# ---- MkDocs events ----------------------------------------------------------------------


def on_files(files, config):
    """Publish the spec as `openapi.json` beside the pages (so a link to it resolves)."""
    from mkdocs.structure.files import File

    spec = json.dumps(openapi_spec(), indent=2)
    files.append(File.generated(config, SPEC_FILE, content=spec))
    return files


def on_page_markdown(markdown, page, config, files):
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_table())
    if OPENAPI_MARKER in markdown:
        markdown = markdown.replace(OPENAPI_MARKER, openapi_markdown(openapi_spec()))
    return markdown

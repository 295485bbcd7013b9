"""Every service's API description: `/openapi.json` as the service really answers, and the two
pages that render it, `/docs` (Swagger UI: try the routes) and `/redoc` (ReDoc: read them).

The pages' scripts and styles come from the `fastapi-offline` package (a dependency in
pyproject.toml) and are served by the service itself, never by a CDN: the docs work on a machine
with no network.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from common.interfaces import ErrorBody

DOCS_ASSETS = Path(str(resources.files("fastapi_offline") / "static"))
DOCS_ASSETS_URL = "/docs-assets"
FASTAPI_422 = "#/components/schemas/HTTPValidationError"
# ReDoc's side menu always shows its maker's logo from a CDN (hidden when it fails to load):
# the bundle is served with that one remote URL turned into a local image of the same words.
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="80" height="14"><text x="0" y="11" '
    'font-family="sans-serif" font-size="11" fill="#888">Redocly</text></svg>'
)
# every service's error answer (`common.service.error_body`), in every spec's components
ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_CONTENT = {"application/json": {"schema": ERROR_BODY_REF}}


def add_docs(app: FastAPI) -> None:
    """`/docs` and `/redoc`, with `DOCS_ASSETS` mounted at `DOCS_ASSETS_URL`."""

    @app.get(f"{DOCS_ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:  # before the mount, which would answer it otherwise
        return Response(redoc_bundle(), media_type="text/javascript; charset=utf-8")

    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")  # behind a proxy that strips a prefix
        return f"{root}{app.openapi_url}", f"{root}{DOCS_ASSETS_URL}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=spec,
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # no validator badge: it would send the spec to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_redoc_html(
            openapi_url=spec,
            title=f"{app.title} API",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )


@functools.cache
def redoc_bundle() -> bytes:
    """redoc.standalone.js with no remote URL left in what it loads (REDOC_LOGO_URL)."""
    bundle = (DOCS_ASSETS / "redoc.standalone.js").read_bytes()
    local = f"data:image/svg+xml,{quote(REDOC_LOGO)}".encode()
    return bundle.replace(REDOC_LOGO_URL, local)


def spec_as_answered(app: FastAPI) -> dict:
    """`app.openapi()`: FastAPI's spec with the error body in its components (routes refer to
    it as ERROR_CONTENT), its 422s as the service sends them (`validation_errors_as_sent`) and
    its titled request bodies named (`named_bodies`); built once."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)  # FastAPI keeps it in app.openapi_schema
        add_error_body(spec.setdefault("components", {}).setdefault("schemas", {}))
        validation_errors_as_sent(spec)
        named_bodies(spec)
    return app.openapi_schema


def named_bodies(spec: dict) -> None:
    """A request body given inline with a title (`openapi_extra`: one FastAPI does not read)
    becomes the component of that name, as FastAPI's own bodies are: a generated client then
    calls its class by that name (`JobSubmission`, not `CreateJobJobSubmission`)."""
    components = spec["components"]["schemas"]
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                title = media.get("schema", {}).get("title")
                if title and title not in components:
                    components[title] = media["schema"]
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}


def validation_errors_as_sent(spec: dict) -> None:
    """FastAPI documents a 422 with its own body on every route with parameters; the services'
    handler sends the error body instead (`invalid_request`). Where nothing can fail validation
    (no body, only path parameters that are plain strings) there is no 422 at all."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if schema_ref(responses.get("422")) != FASTAPI_422:
                continue  # none, or documented by the route itself
            if cannot_fail_validation(operation):
                del responses["422"]
            else:
                responses["422"] = {
                    "description": "A parameter or the body is not accepted (invalid_request).",
                    "content": ERROR_CONTENT,
                }
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def schema_ref(response: dict | None) -> str | None:
    if response is None:
        return None
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def cannot_fail_validation(operation: dict) -> bool:
    notes = ("title", "description")  # what a schema may hold besides its type and still
    return "requestBody" not in operation and all(  # accept any string
        p["in"] == "path"
        and {k: v for k, v in p["schema"].items() if k not in notes} == {"type": "string"}
        for p in operation.get("parameters", [])
    )


def add_error_body(components: dict) -> None:
    """ErrorBody, and what it refers to, into a spec's `components.schemas`."""
    schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("ErrorBody", schema)

"""The README is a front door and the docs site builds: `mkdocs build --strict` passes (no broken
link, no orphan page, no missing anchor), the settings table covers every setting, and the API
reference covers every route and schema of the gateway's OpenAPI spec."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from common.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
README_MAX_LINES = 250
BUILD_TIMEOUT_S = 120
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# markdown links and images, `[text](target)`; code spans and fenced code are removed first
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@pytest.fixture(scope="module")
def hooks():
    """docs/hooks.py, the build's own code for the generated pages."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO_ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner, not a warning
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )


def links_of(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


def anchors_of(markdown_file: Path) -> set[str]:
    """The ids a page's headings get: `{#explicit}` ones, else the toc extension's slug."""
    anchors = set()
    for line in re.sub(r"```.*?```", "", markdown_file.read_text(), flags=re.S).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if heading:
            explicit = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", heading.group(1))
            anchors.add(explicit.group(1) if explicit else slugify(heading.group(1), "-"))
    return anchors


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The real site, built once with the repository's mkdocs.yml."""
    out = tmp_path_factory.mktemp("site")
    result = mkdocs_build(REPO_ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


# ---- the README ----


def test_readme_fits_on_a_few_screens():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


def test_every_relative_link_of_the_readme_resolves():
    links = [u for u in links_of(README.read_text()) if not re.match(r"[a-z][a-z0-9+.-]*:", u)]
    assert links, "the README links into docs/"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (REPO_ROOT / path) if path else README
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors_of(target):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, "README.md: " + "; ".join(broken)


def test_the_readme_shows_the_page_and_the_two_commands():
    text = README.read_text()
    assert re.search(r"!\[[^\]]+\]\(docs/screenshots/[\w-]+\.png\)", text)
    for command in ("./run.sh install", "./run.sh up", "./run.sh test"):
        assert command in text
    assert "curl -F file=@" in text


# ---- settings ----


def test_every_setting_has_a_description():
    missing = [name for name, f in Settings.model_fields.items() if not (f.description or "")]
    assert not missing, f"Settings fields without Field(description=...): {missing}"


def test_the_settings_table_covers_every_setting(site, hooks):
    rows = hooks.settings_rows()
    assert [r["env"] for r in rows] == [name.upper() for name in Settings.model_fields]
    assert all(r["description"] for r in rows)
    page = (site / "settings" / "index.html").read_text()
    assert "settings-table" not in page, "the marker was not replaced"
    missing = [r["env"] for r in rows if f"<code>{r['env']}</code>" not in page]
    assert not missing, f"not in the built settings page: {missing}"


# ---- the site ----


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        out = []
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out.extend(pages(value) if isinstance(value, list) else [value])
        return out

    docs = REPO_ROOT / config["docs_dir"]
    on_disk = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    assert sorted(pages(config["nav"])) == sorted(on_disk)


def test_the_site_builds_strictly_with_every_page(site):
    for page in ("index.html", "settings/index.html", "api-reference/index.html"):
        assert (site / page).is_file()
    assert (site / "openapi.json").is_file()
    assert not (site / ".openapi.json").exists(), "the plugin's copy of the spec is no page"
    assert (site / "architecture.svg").is_file()
    assert not (site / "hooks.py").exists(), "the build hook is no page"


def sections_of(html: str) -> dict[str, dict[str, str]]:
    """A built page's `<h3>` sections under each `<h2>`: {h2 text: {h3 text: its HTML up to the
    next heading of either level}}, the texts without tags and permalinks."""

    def text(inner: str) -> str:
        inner = re.sub(r'<a class="headerlink".*?</a>', "", inner, flags=re.S)
        return " ".join(unescape(re.sub(r"<[^>]+>", "", inner)).split())

    sections: dict[str, dict[str, str]] = {}
    h2 = None
    parts = re.split(r"<h([23])[^>]*>(.*?)</h\1>", html, flags=re.S)
    for level, inner, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        if level == "2":
            h2 = text(inner)
            sections[h2] = {}
        elif h2 is not None:
            sections[h2][text(inner)] = body
    return sections


def test_the_api_reference_covers_every_route_and_schema(site, hooks):
    """Every operation of the spec is a section with its parameters and response codes, every
    schema one under "Schemas", and nothing else is (neoteroi.mkdocsoad renders them)."""
    spec = hooks.openapi_spec()
    page = (site / "api-reference" / "index.html").read_text()
    assert "[OAD(" not in page, "the plugin did not render the spec"
    sections = sections_of(page)
    schemas = sections.pop("Schemas", {})
    sections.pop("Security schemes", None)
    operations = {title: body for section in sections.values() for title, body in section.items()}

    expected = {
        f"{method.upper()} {path}": op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    assert sorted(operations) == sorted(expected)
    for title, op in expected.items():
        body = operations[title]
        missing = [
            p["name"] for p in op.get("parameters", []) if f"<code>{p['name']}</code>" not in body
        ]
        missing += [f"response {code}" for code in op["responses"] if f">{code} " not in body]
        assert not missing, f"{title}: not in its section: {missing}"
    assert sorted(schemas) == sorted(spec["components"]["schemas"])

    # the upload form: every field of the multipart body is in POST /api/jobs
    form = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = form["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = spec["components"]["schemas"][name]["properties"]
    body = operations["POST /api/jobs"]
    assert [f for f in fields if f'"{f}"' not in body] == []
    assert "202 Accepted" in body


def test_nothing_is_fetched_from_a_cdn(site):
    """No Google Fonts, no mermaid from unpkg: the site works offline."""
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "fonts.googleapis.com" not in text, html
        assert "fonts.gstatic.com" not in text, html
        assert 'class="mermaid"' not in text, html


def test_strict_mode_fails_on_a_broken_link_and_an_orphan_page(tmp_path):
    """The validation settings of mkdocs.yml turn both into build failures."""
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](missing.md) and [no anchor](#nowhere)\n")
    (docs / "orphan.md").write_text("# Not in the nav\n")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], hooks=[])
    config.pop("exclude_docs", None)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr
    assert "orphan.md" in result.stderr
    assert "nowhere" in result.stderr

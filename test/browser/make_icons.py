"""The page's app icons (gateway/static/icon-*.png) drawn from favicon.svg by headless Chromium.

`python -m test.browser.make_icons` after changing favicon.svg; the PNGs are committed. The
maskable icon fills its square with the favicon's blue and keeps the bars inside the middle
60 %, the part every launcher's mask leaves visible (the "safe zone" is a circle of 80 %).
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

from test.browser.conftest import CHROMIUM

STATIC = Path(__file__).resolve().parents[2] / "gateway" / "static"
BLUE = "#1d4ed8"  # favicon.svg's background
ICONS = (  # (file, side in px, the favicon's share of the side, background)
    ("icon-192.png", 192, 1.0, "transparent"),
    ("icon-512.png", 512, 1.0, "transparent"),
    ("icon-maskable-512.png", 512, 0.6, BLUE),
)


def page_html(svg: str, side: int, share: float, background: str) -> str:
    size = round(side * share)
    return (
        f"<body style='margin:0;width:{side}px;height:{side}px;display:grid;place-items:center;"
        f"background:{background}'><div style='width:{size}px;height:{size}px'>{svg}</div></body>"
    )


def main() -> None:
    svg = (
        (STATIC / "favicon.svg")
        .read_text(encoding="utf-8")
        .replace("<svg ", "<svg width='100%' height='100%' ", 1)
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for name, side, share, background in ICONS:
            page = browser.new_page(viewport={"width": side, "height": side})
            page.set_content(page_html(svg, side, share, background))
            page.screenshot(path=str(STATIC / name), omit_background=background == "transparent")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()

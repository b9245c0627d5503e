"""The page of `dvc plots show` with Vega, Vega-Lite and vega-embed inlined, so plots render
offline.

dvc-render's own page loads the three libraries from a CDN and stays blank without a network.
`plots.html_template` in `.dvc/config` points DVC at the page written here (by `make` and
`make plots`) from the pinned django-js-lib-vega-embed package: no hand-copied JavaScript.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from dvc.config import Config

from stages.cli import run
from stages.storage import write_text

PACKAGE = "js_lib_vega_embed"  # the import name of django-js-lib-vega-embed (pyproject.toml)
# in load order: vega-lite needs window.vega, vega-embed needs both; majors match dvc-render's
LIBRARIES = ("vega5.js", "vega-lite5.js", "vega-embed6.js")
# dvc-render fills these; `{scripts}` is left out on purpose: it holds the CDN <script> tags
PLACEHOLDERS = ("{refresh_tag}", "{plot_divs}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
<!-- libraries -->
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class PlotsTemplateError(RuntimeError):
    """The offline page cannot be written or found; the message says what to do."""


def read_libraries() -> dict[str, str]:
    """The JavaScript of each library in LIBRARIES, as the installed package ships it."""
    try:
        folder = resources.files(PACKAGE) / "static" / PACKAGE
        return {name: (folder / name).read_text(encoding="utf-8") for name in LIBRARIES}
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise PlotsTemplateError(
            f"the Vega libraries are not installed ({e}): run `make plots`, or in a venv made"
            " before pyproject.toml pinned django-js-lib-vega-embed, `.venv/bin/pip install -e .`"
        ) from e


def render_page(libraries: dict[str, str]) -> str:
    """The HTML template for dvc-render with each library inlined in its own <script>."""
    blocks = []
    for name, code in libraries.items():
        # either would cut the page: `</script` ends the element, a placeholder gets replaced
        for bad in ("</script", *PLACEHOLDERS):
            if bad in code.lower():
                raise PlotsTemplateError(f"{name} contains {bad!r}: it cannot be inlined as is")
        blocks.append(f"<script>/* {name}, from {PACKAGE} */\n{code}\n</script>")
    return PAGE.replace("<!-- libraries -->", "\n".join(blocks))


def template_path(dvc_dir: Path) -> Path:
    """Where DVC reads the page: `plots.html_template`, relative to the .dvc folder."""
    configured = Config(dvc_dir=str(dvc_dir))["plots"].get("html_template")
    if not configured:
        raise PlotsTemplateError(
            f"plots.html_template is not set in {dvc_dir / 'config'}: without it `dvc plots show`"
            " loads Vega from a CDN; set it with `dvc config plots.html_template"
            " plots_template.html`"
        )
    return dvc_dir / configured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write (default: plots.html_template)")
    args = parser.parse_args(argv)
    out = args.out or template_path(Path(".dvc"))
    write_text(out, render_page(read_libraries()))
    print(f"wrote {out}: `dvc plots show` renders offline")


if __name__ == "__main__":
    run(main, (PlotsTemplateError,))

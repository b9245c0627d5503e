"""`dvc plots show` on the committed plot files makes a page that renders without a network.

The page comes from the template that `.dvc/config` names, written by `stages.plots_template`
in a copy of the repository's pipeline files and plots; Chromium, where installed, renders it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_worktree
from dvc_render.base import Renderer

from stages import plots_template

# the libraries dvc-render's own page loads from a CDN (vega 5, vega-lite 5, vega-embed 6)
LIBRARIES = ("vega5.js", "vega-lite5.js", "vega-embed6.js")
PLOT_FILES = ("percentiles.csv", "slices.csv")  # the `plots:` outputs of benchmark@ and validate@
# a <script src> or <link href> that needs the network
REMOTE = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


def copy_plots_repo(dest: Path) -> Path:
    """dvc.yaml, params.yaml, .dvc/config and the tracked reports (with the plot files) in
    `dest`."""
    return copy_worktree(dest, "dvc.yaml", "params.yaml", ".dvc/config", "reports")


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


def plot_files(repo: Path) -> dict[str, Path]:
    """Each committed plot file under the div id dvc-render gives it (its path, specials as _)."""
    paths = sorted(p for name in PLOT_FILES for p in (repo / "reports").rglob(name))
    assert len(paths) >= 2, f"no committed plot files under {repo / 'reports'}"
    return {Renderer.remove_special_chars(p.relative_to(repo).as_posix()): p for p in paths}


def titles(repo: Path) -> dict[str, str]:
    """The title dvc.yaml gives each plot, by file name."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {
        Path(out).name: props["title"]
        for stage in stages.values()
        for plot in stage.get("do", stage).get("plots", [])
        for out, props in plot.items()
    }


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy where the template is written as `make` does, then `dvc plots show` is run."""
    repo = copy_plots_repo(tmp_path_factory.mktemp("plots"))
    written = run(repo, "-m", "stages.plots_template")
    assert written.returncode == 0, written.stderr
    done = run(repo, "-m", "dvc", "plots", "show")
    assert done.returncode == 0, done.stdout + done.stderr
    return repo


def test_template_is_configured_and_not_committed() -> None:
    path = plots_template.template_path(ROOT / ".dvc")
    assert path == ROOT / ".dvc" / "plots_template.html"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{path} (about 1 MB, generated) is not git-ignored"


def test_missing_template_stops_dvc_instead_of_loading_a_cdn(tmp_path: Path) -> None:
    repo = copy_plots_repo(tmp_path)
    done = run(repo, "-m", "dvc", "plots", "show")
    assert done.returncode != 0, "dvc plots show made a page without the offline template"
    assert not (repo / "dvc_plots" / "index.html").exists()


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots_template, "PACKAGE", "no_such_vega_package")
    with pytest.raises(plots_template.PlotsTemplateError, match="make plots"):
        plots_template.read_libraries()


def test_unset_template_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[core]\n    analytics = false\n")
    with pytest.raises(plots_template.PlotsTemplateError, match=r"plots\.html_template"):
        plots_template.template_path(tmp_path)


def test_page_loads_nothing_from_the_network_and_inlines_vega(shown: Path) -> None:
    page = (shown / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert REMOTE.findall(page) == []
    assert "cdn.jsdelivr" not in page
    folder = resources.files("js_lib_vega_embed") / "static" / "js_lib_vega_embed"
    at = [page.find(f"\n{(folder / name).read_text(encoding='utf-8')}\n") for name in LIBRARIES]
    assert -1 not in at, f"not all of {LIBRARIES} are inlined"
    assert at == sorted(at), f"not inlined in load order {LIBRARIES}"


def test_page_holds_every_plot_spec(shown: Path) -> None:
    page = (shown / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    title = titles(shown)
    assert set(title) == set(PLOT_FILES)
    for div, path in plot_files(shown).items():
        start = page.index(f'<div id = "{div}">')
        spec = page[start : page.index(f"vegaEmbed('#{div}', spec)", start)]
        assert f'"text": "{title[path.name]}"' in spec
        with path.open(newline="") as f:
            first = next(csv.DictReader(f))
        for column, value in first.items():  # dvc-render keeps CSV values as strings
            assert f'"{column}": "{value}"' in spec, f"{div}: {column}={value} not in its spec"


def test_page_renders_in_headless_chromium(shown: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no `chromium` on PATH (Debian's chromium package): the render is not checked")
    page = shown / "dvc_plots" / "index.html"
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            "--virtual-time-budget=5000",  # ms of page time for the scripts to draw
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    starts = sorted((dom.index(f'id="{div}"'), div) for div in plot_files(shown))
    ends = [start for start, _ in starts[1:]] + [len(dom)]
    for (start, div), end in zip(starts, ends, strict=True):
        assert re.search(r"<(canvas|svg)\b", dom[start:end]), f"plot {div} was not drawn"

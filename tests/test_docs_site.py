"""The documentation site builds with no warning, and its API reference covers every public name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.public_api import MODULES, RUNNING, public_objects

ROOT = Path(__file__).resolve().parents[1]


def _rendered() -> set[str]:
    """The objects the API pages render (``::: path`` lines)."""
    return {m for page in (ROOT / "docs" / "api").glob("*.md")
            for m in re.findall(r"^::: (\S+)", page.read_text(), re.M)}


def test_the_api_reference_renders_every_public_name() -> None:
    rendered = _rendered()
    missing = []
    for qualified, obj in public_objects().items():
        paths = {qualified, *(f"{m}.{obj.__name__}" for m in (*MODULES, RUNNING[0]))}
        if not paths & rendered:
            missing.append(qualified)
    assert not missing, f"docs/api/*.md renders none of {missing}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    # --strict: a broken link or reference, or a docstring mkdocstrings cannot parse, fails.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    page = (tmp_path / "site" / "api" / "scenario" / "index.html").read_text()
    assert "Rounds" in page and "cohort_size" in page

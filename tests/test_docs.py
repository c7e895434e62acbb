"""Every ``python`` code block in the README and the docs runs as written: the blocks of a page run
in order in one namespace, as a reader would paste them (a failing snippet fails the suite). The
links between the pages are checked by ``mkdocs build --strict`` (``make docs``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
WITH_CODE = [p for p in PAGES if BLOCK.search(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace = {"__name__": "__snippet__"}
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    ran = 0
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name} block {i}", "exec"), namespace)  # a failing snippet raises here
        ran += 1
    assert blocks and ran == len(blocks), f"{page.name}: ran {ran} of {len(blocks)} python blocks"


def test_the_pages_that_teach_with_code_are_collected():
    names = {str(p.relative_to(ROOT)) for p in WITH_CODE}
    expected = {"README.md", "docs/forecasting.md", "docs/understanding/gradients.md",
                "docs/tutorials/language-model.md", "docs/understanding/cells/lstm.md"}
    assert expected <= names, f"pages with python blocks not collected: {sorted(expected - names)}"

#!/usr/bin/env python3
"""Run the code of each per-recurrence page (docs/understanding/cells/*.md) in docs/figures/, which
writes the page's figure, and print what it prints (the ratios quoted on the page).

    python docs/scripts/cell_pages.py            # all pages, about 10 s on one CPU thread
    python docs/scripts/cell_pages.py lstm gru   # some of them

The pages' code is run exactly as written (the suite's tests/test_docs.py runs it too, in a temporary
directory), so the figures cannot drift from the code shown next to them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def main(names: list[str]) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    pages = sorted((DOCS / "understanding" / "cells").glob("*.md"))
    if names:
        unknown = set(names) - {p.stem for p in pages}
        if unknown:
            raise SystemExit(f"unknown page(s) {sorted(unknown)}; expected some of {[p.stem for p in pages]}")
        pages = [p for p in pages if p.stem in names]
    os.chdir(DOCS / "figures")
    for page in pages:
        start = time.perf_counter()
        print(f"== {page.name}")
        namespace = {"__name__": "__page__"}
        for i, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            exec(compile(code, f"{page.name} block {i}", "exec"), namespace)
        print(f"   ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

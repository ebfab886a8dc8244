# Runs every ```python block of README.md and docs/*.md, so no documented example can rot.
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        if "_build" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), start=1):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}#{number}", match.group(1)))
    return found


BLOCKS = _blocks()


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_documented_example_runs(where: str, code: str) -> None:
    # Each block is a standalone script: it gets a fresh namespace, as `python block.py` would.
    exec(compile(code, where, "exec"), {"__name__": "__main__"})


def test_docs_have_examples() -> None:
    # Guards the extractor itself: if the fence pattern broke, every example would silently vanish.
    assert any(where.startswith("README.md") for where, _ in BLOCKS)

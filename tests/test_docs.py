"""Run every ```python block of docs/api.md and README.md, each in a fresh namespace, so the docs
cannot drift.

Only fences tagged exactly ``python`` are examples; signatures use untagged fences. A block passes when
it runs to the end: any exception (a failed ``assert`` included) fails its test, with a traceback that
points at the line of docs/api.md.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
README = DOC.parents[1] / "README.md"
MIN_BLOCKS = 12
_FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def extract_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(heading, first code line, code)`` for each ```python block, in order (1-based line numbers)."""
    blocks, heading, fence, lang, start, body = [], "top", None, "", 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, lang, start, body = match.group(2), match.group(3), number + 1, []
            elif _HEADING.match(line):
                heading = _HEADING.match(line).group(1)
        elif match and match.group(2) == fence and not match.group(3):
            if lang == "python":
                blocks.append((heading, start, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        raise ValueError(f"{DOC.name}: code fence opened at line {start - 1} is never closed")
    return blocks


def _slug(heading: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "-", heading).strip("-").lower()[:40] or "block"


BLOCKS = extract_blocks(DOC.read_text(encoding="utf-8"))
IDS = [f"{i:02d}-{_slug(heading)}" for i, (heading, _, _) in enumerate(BLOCKS)]


def test_docs_have_examples():
    assert len(BLOCKS) >= MIN_BLOCKS, f"found only {len(BLOCKS)} ```python blocks in {DOC}"


def test_no_untested_python_fences():
    """A ```py / ```python3 / ```pycon fence would look like an example but never run."""
    tags = re.findall(r"^\s*`{3,}\s*(py\w*)\s*$", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert set(tags) <= {"python"}, f"use ```python for examples, found {sorted(set(tags) - {'python'})}"


def test_extractor_reports_exceptions():
    """The harness must not swallow errors: a raising block fails."""
    (_, start, code), = extract_blocks("# h\n\n```python\nraise ValueError('boom')\n```\n")
    with pytest.raises(ValueError, match="boom"):
        _run(start, code)


def _run(start: int, code: str, path: Path = DOC) -> None:
    # pad so that tracebacks give the line numbers of the markdown file
    source = "\n" * (start - 1) + code
    exec(compile(source, str(path), "exec"), {"__name__": "__docs_example__"})  # noqa: S102


@pytest.mark.parametrize("start,code", [(start, code) for _, start, code in BLOCKS], ids=IDS)
def test_doc_example(start, code):
    _run(start, code)


README_BLOCKS = extract_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_its_usage_example():
    assert README_BLOCKS, "README.md lost its ```python usage example"


@pytest.mark.parametrize("start,code", [(start, code) for _, start, code in README_BLOCKS])
def test_readme_example(start, code):
    _run(start, code, README)

"""The user documentation: every relative link and anchor in the docs and the README leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/getting-started.md", "docs/flow.md", "docs/numerics.md", "docs/column-prior-tiling.md",
        "docs/adding-an-operator.md", "docs/faq.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS)
def test_links_resolve(doc):
    src = ROOT / doc
    links = [m for m in LINK.findall(src.read_text()) if not m.startswith(("http://", "https://"))]
    assert links, f"{doc} links nowhere"
    for link in links:
        file, _, anchor = link.partition("#")
        target = (src.parent / file).resolve() if file else src
        assert target.exists(), f"{doc}: {link} (no such file)"
        if anchor:
            assert anchor in _anchors(target), f"{doc}: {link} (no such heading)"

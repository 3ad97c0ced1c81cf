"""The user docs speak of the product only, and the README stays a product page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_product_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    first_screen = "\n".join(text.splitlines()[:20])
    assert "2412.16469" in first_screen and "make demo" in first_screen and ".png" in first_screen
    assert "source .venv/bin/activate" in text  # how `study` gets on the PATH


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_no_issue_numbers_or_files_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    for pattern in (r"(?<![\w&/])#\d+\b", r"\.\./shared/paper", r"DESIGN\.md", r"\bin progress\b", r"\bissue #"):
        assert not re.search(pattern, text), (path.name, pattern, re.search(pattern, text))


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text)
    local = [link for link in links if not link.startswith("http")]
    assert local, "the README links its docs"
    for link in local:
        assert (ROOT / link).exists(), link

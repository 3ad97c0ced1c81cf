"""The Python examples of the user docs, run against a real results folder so they cannot rot.

`python_blocks(path)` returns every ```python block of a Markdown file; `run_blocks` executes
them in one namespace with the docs' example folder ("results/demo") replaced by a real one,
and returns the namespace so a test can check what the examples computed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FOLDER = "results/demo"
DOCS_WITH_EXAMPLES = ("README.md", "docs/results.md")
"""The user docs whose ```python blocks read a results folder (each is run by the slow tier)."""


def python_blocks(path: str | Path) -> list[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_blocks(path: str | Path, results_dir: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    for block in python_blocks(path):
        exec(compile(block.replace(EXAMPLE_FOLDER, str(results_dir)), f"{path} example", "exec"), namespace)
    return namespace

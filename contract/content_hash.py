"""The content hash: a short hex digest of JSON-able data, independent of key order.

Stage keys, trial ids, base keys and measurement keys are all this hash of what determines
them, so equal content gives equal keys in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(payload: Any, n: int = 16) -> str:
    """The first `n` hex digits of sha256 over `payload` as canonical JSON (sorted keys, no
    spaces; values JSON cannot hold are written with str())."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]

"""Splits a source does not ship, cut by content: the same key always lands on the same side.

A side is decided by a hash of a key (never a seed, never row order), read as a point in
[0, 1) and placed in consecutive bands, e.g. train [0, 0.40), validation [0.40, 0.45), eval
the rest. Keys are content (a normalized statement, a filled BBQ template, a rendered
question), so two copies of one item cannot fall on both sides of a split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def normalized_text(text: str) -> str:
    """Case-folded, whitespace collapsed: what counts as "the same text" for a split."""
    return " ".join(str(text).casefold().split())


def unit_point(key: str) -> float:
    """The first 8 bytes of sha256(key) as a fraction of 2**64, in [0, 1)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def side_of(key: str, bands: Sequence[tuple[str, float]], rest: str) -> str:
    """The split whose band holds unit_point(key): `bands` are (split, share) in order from 0;
    past the last band, `rest`."""
    point, edge = unit_point(key), 0.0
    for split, share in bands:
        edge += share
        if point < edge:
            return split
    return rest

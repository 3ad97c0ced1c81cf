"""Shipped study files (study/presets/*.yaml), addressable by name: `study run demo`; a
mistyped name is refused with the closest preset (`UnknownPresetError`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from contract.problems import did_you_mean

PRESET_DIR = Path(__file__).parent / "presets"


def preset_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def describe(path: Path) -> str:
    """First comment line of a preset file: its one-line description."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def render_presets(width: int | None = None) -> str:
    """`study presets`: each preset's name, description and file; wrapped to `width` columns (a
    terminal's), or one line each when None (output read by a program)."""
    lines = []
    for name, path in preset_paths().items():
        text = f"{name:24s} {describe(path)}  ({path})"
        if width is None:
            lines.append(text)
        else:
            lines.extend(textwrap.wrap(text, width=max(width, 50), subsequent_indent=" " * 25,
                                       break_long_words=False, break_on_hyphens=False))
    return "\n".join(lines)


class UnknownPresetError(FileNotFoundError):
    """A name that is neither a file nor a preset (the CLI exits 2 on it)."""


def resolve_study_file(name_or_path: str) -> Path:
    """A path to an existing file, else a preset name; a path with a suffix or a folder as given
    (loading reports it); UnknownPresetError for a bare name that is no preset."""
    path = Path(name_or_path)
    if path.exists():
        return path
    presets = preset_paths()
    if name_or_path in presets:
        return presets[name_or_path]
    if path.suffix or len(path.parts) != 1:
        return path
    raise UnknownPresetError(f"no study file or preset named {name_or_path!r}{did_you_mean(name_or_path, presets)} "
                             f"(presets: {', '.join(presets)}; `study presets` describes them)")

"""Shipped study files (study/presets/*.yaml), addressable by name: `study run demo`."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).parent / "presets"


def preset_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def describe(path: Path) -> str:
    """First comment line of a preset file: its one-line description."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_study_file(name_or_path: str) -> Path:
    """A path to an existing file, else a preset name; otherwise the path as given (load reports it)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    presets = preset_paths()
    return presets.get(name_or_path, presets.get(path.stem, path) if path.suffix == "" else path)

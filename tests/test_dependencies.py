"""pyproject.toml admits what is tested: every dependency (and test extra) installed here lies
in its declared range, and every range that is not an exact pin stops below an untested major."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
REQUIREMENTS = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]
                + PYPROJECT["project"]["optional-dependencies"]["test"]]


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_the_installed_version_is_in_the_declared_range(requirement):
    installed = importlib.metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_every_range_has_an_upper_bound(requirement):
    operators = {spec.operator for spec in requirement.specifier}
    assert "==" in operators or "<" in operators or "<=" in operators, f"{requirement} admits any future major"

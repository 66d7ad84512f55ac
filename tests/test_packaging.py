"""The wheel ships every Python package of the repository (CI installs it with `pip install .`, not editable)."""

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {"tests", "benchmarks"}


def package_folders() -> set[str]:
    """Every folder with an __init__.py that git tracks (a build/ or .venv/ beside the sources is not ours)."""
    files = subprocess.run(["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = set()
    for f in files:
        parts = Path(f).parent.parts
        if parts and parts[0] in NOT_SHIPPED:
            continue
        found.add(".".join(("zipar",) + parts))
    return found


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = sorted(package_folders() - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert "zipar.zipar_core.modes" in package_folders()

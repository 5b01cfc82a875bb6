"""The package's wheel, built as `pip wheel` builds it, from a copy of the checkout (so the
build leaves nothing, build/ or egg-info, in it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(workdir: Path) -> Path:
    """The wheel of this checkout, built under `workdir`. Without build isolation: the
    setuptools of the test environment builds it offline, in seconds (an isolated build
    installed setuptools into a fresh environment first, most of the test's time)."""
    tree = workdir / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    wheels = workdir / "wheels"
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *(str(tree), "-w", str(wheels)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("downloader-*.whl")
    return wheel

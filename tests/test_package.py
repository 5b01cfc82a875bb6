"""What an installed package holds: the store's Lua scripts are files, and a package built
without them would fail at its first job."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.wheel import ROOT, build_wheel

LUA = ROOT / "src" / "downloader" / "store" / "lua"


def test_a_built_wheel_holds_every_lua_script_and_its_store_loads_them(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        packed = {
            Path(name).name
            for name in archive.namelist()
            if name.startswith("downloader/store/lua/")
        }
    assert packed == {path.name for path in LUA.glob("*.lua")}
    assert "library.lua" in packed

    # The installed copy (not this checkout) reads every script, the library's included.
    names = sorted(path.stem for path in LUA.glob("*.lua"))
    check = (
        "import sys, downloader\n"
        "from downloader.store import scripts\n"
        f"assert downloader.__file__.startswith({str(tmp_path / 'site')!r}), downloader.__file__\n"
        f"for name in {names!r}:\n"
        "    assert scripts.source(name, library=name != scripts.LIBRARY)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

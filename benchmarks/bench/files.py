"""The test files: random bytes, hashed while they are written, so every download's SHA-256
is checked against a hash computed once."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import BenchError, MiB, Profile


@dataclass
class SourceFile:
    name: str
    size: int
    sha256: str


def write_random(root: Path, name: str, size: int, block: int = 4 * MiB) -> SourceFile:
    """Write `size` random bytes, hashing them on the way (the source is hashed only once)."""
    digest = hashlib.sha256()
    with (root / name).open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(block, left))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return SourceFile(name, size, digest.hexdigest())


@dataclass
class TestFiles:
    root: Path
    big: SourceFile
    rss_small: SourceFile
    tiny: SourceFile
    small: list[SourceFile]
    parts: list[SourceFile] = field(default_factory=list)

    def tiny_set(self, count: int, size: int) -> list[SourceFile]:
        """`count` files of `size` bytes under `parts/`, made on first use and then reused."""
        folder = self.root / "parts"
        folder.mkdir(exist_ok=True)
        for i in range(len(self.parts), count):
            self.parts.append(write_random(self.root, f"parts/p{i:05}.bin", size))
        return self.parts[:count]


def make_files(root: Path, profile: Profile) -> TestFiles:
    print(f"making test files in {root} ...", flush=True)
    (root / "small").mkdir(parents=True)
    return TestFiles(
        root=root,
        big=write_random(root, "big.bin", profile.big_size),
        rss_small=write_random(root, "rss.bin", profile.rss_small_size),
        tiny=write_random(root, "tiny.bin", profile.tiny_size),
        small=[
            write_random(root, f"small/f{i:04}.bin", profile.small_size)
            for i in range(profile.small_count)
        ],
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def verify_all(sources: list[SourceFile], dest: Path) -> None:
    """Every source's file under `dest` (by base name) has the source's SHA-256."""
    for source in sources:
        path = dest / Path(source.name).name
        if not path.exists() or sha256_file(path) != source.sha256:
            raise BenchError(f"{path}: missing or SHA-256 mismatch")

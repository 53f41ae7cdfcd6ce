"""The fingerprint of the playground's sources, computed as ui/scripts/stamp.mjs computes it.

The build writes ``static/build-info.json``: a SHA-256 of the sources it was built from and one
of every built file. Comparing them with the checkout tells whether the committed build is up to
date with ui/ and untouched since, without needing Node or a byte-identical rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Keep in step with SOURCE_ENTRIES in ui/scripts/stamp.mjs.
SOURCE_ENTRIES = ("index.html", "package.json", "package-lock.json", "vite.config.js",
                  "scripts", "src")
BUILD_INFO = "build-info.json"


def _files_under(path: Path) -> list[Path]:
    """Every file at or under ``path`` (none if it does not exist)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def sources_digest(ui_dir: Path) -> str:
    """SHA-256 over each source file's relative path and content digest, in path order."""
    paths = [p for entry in SOURCE_ENTRIES for p in _files_under(ui_dir / entry)]
    lines = sorted(
        f"{p.relative_to(ui_dir).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in paths
    )
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def built_files(static_dir: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every built file but build-info.json."""
    return {
        p.relative_to(static_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _files_under(static_dir)
        if p.name != BUILD_INFO
    }


def read_build_info(static_dir: Path) -> dict:
    return json.loads((static_dir / BUILD_INFO).read_text(encoding="utf-8"))

"""The project speaks of the project alone: no file of the repository names the machinery it was built with (the
build machines' own paths, who or what ran a measurement) instead of the project, its users and their machines."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Phrases that describe how the project was built rather than the project (this file itself is not scanned).
_WORK = "/" + "work/"
PATTERNS = [
    re.compile(re.escape(_WORK) + r"(main|shared|\.library|\.mirror)"),
    re.compile(r"\." + "library/"),
    re.compile(r"\bother " + r"agents?'?\b", re.IGNORECASE),
    re.compile(r"\bagents'" + r" (load|jobs|test)", re.IGNORECASE),
    re.compile(r"\b(was|were|is) " + r"lent\b", re.IGNORECASE),
    re.compile(r"device " + r"machine", re.IGNORECASE),
    re.compile(r"`status` " + r"said", re.IGNORECASE),
    re.compile(r"\bwork" + r"place's\b", re.IGNORECASE),
]
TEXT_SUFFIXES = {".py", ".md", ".txt", ".sh", ".js", ".toml", ".json", ".html", ".cfg", ".ini", ".yaml", ".yml", ""}


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / p for p in out.decode("utf-8").split("\0") if p]


def test_no_file_names_the_build_machinery():
    offending = []
    for path in _tracked_files():
        if path == Path(__file__).resolve():
            continue  # its own examples
        if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for pat in PATTERNS:
                if pat.search(line):
                    offending.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()[:120]}")
    assert not offending, "files that speak of the build machinery instead of the project:\n" + "\n".join(offending)


def test_the_scan_finds_what_it_looks_for():
    # each pattern matches the phrase it is written for (so a broken pattern cannot pass silently)
    samples = [_WORK + "shared/fixtures", "see ." + "library/device", "other " + "agents' jobs",
               "no GPU was " + "lent", "the device " + "machine reaches nothing", "(`status` " + "said not drawn)", "the work" + "place's code index"]
    for s in samples:
        assert any(p.search(s) for p in PATTERNS), s

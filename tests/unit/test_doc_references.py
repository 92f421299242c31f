"""Every Markdown file the docs and the code name exists in the repository (two design notes
outside it were cited as if they were in it)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Named on purpose though not in the repository: written by benchmarks/compare.py or latency.py, or another
# project's file (nats-server's server/README-MQTT.md).
NOT_OURS = {"benchmarks/results/latest.md", "latest.md", "benchmarks/results/latency.md",
            "results/latency.md", "latency.md", "server/README-MQTT.md"}
REFERENCE = re.compile(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]+\.md\b")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.toml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_named_markdown_files_exist():
    missing = []
    files = _tracked()
    # a bare name ("each adapter's MAPPING.md") needs some file of that name
    bare_names = {f.name for f in files}
    assert "MAPPING.md" in bare_names  # the scan sees the docs
    for path in files:
        for name in set(REFERENCE.findall(path.read_text(errors="replace"))):
            if name in NOT_OURS or ("/" not in name and name in bare_names):
                continue
            if not ((path.parent / name).exists() or (ROOT / name).exists()):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []

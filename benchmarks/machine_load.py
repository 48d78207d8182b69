"""The machine's load for benchmark reports (figures taken under load are re-taken, not published)."""
from __future__ import annotations

import os
import subprocess


def uptime() -> str:
    """`uptime`'s line, or the load averages where the command is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())

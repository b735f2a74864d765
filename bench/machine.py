"""What every benchmark says about the machine it ran on, and the processes it watches. Standard library only.

    print(cpu_name())              # "AMD EPYC" or "Intel(R) Xeon(R) ...": name it beside every figure
    children(pid)                  # the process ids whose parent is pid (a player's ffmpeg decoders)
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def children(pid: int | None = None) -> list[int]:
    """The live processes whose parent is `pid` (default: this one), read from /proc."""
    pid, out = pid or os.getpid(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out

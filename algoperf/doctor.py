"""`algoperf doctor`: is this environment ready to run? (placeholder, being written)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BYTES_PER_PARAM = 16


def memory_need_bytes(info: Any, framework: str) -> int:
    n = info.n_params.get(framework) or max(info.n_params.values(), default=0)
    return int(n * BYTES_PER_PARAM)


def available_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None

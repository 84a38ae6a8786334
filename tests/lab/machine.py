"""What machine a benchmark ran on (printed beside its figures, docs/performance.md)."""

from __future__ import annotations


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or "?"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"

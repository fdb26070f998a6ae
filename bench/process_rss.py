"""Run a command and print the peak RSS of each of its processes (itself and every descendant, e.g. `map` workers),
sampled from /proc every 0.1 s (Linux). The command's stderr goes to `--stderr`.

    HF_DATASETS_CACHE=/tmp/cache python bench/process_rss.py -- deita-train run b_10000000.yaml
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

SAMPLE_SECONDS = 0.1


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:  # the process ended meanwhile
        pass
    return found


def resident_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stderr", type=Path, default=Path("process_rss.stderr"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with args.stderr.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        peaks: dict[int, int] = {}
        names: dict[int, str] = {}
        started = time.perf_counter()
        while process.poll() is None:
            pending = [process.pid]
            while pending:
                pid = pending.pop()
                pending += children(pid)
                if (kb := resident_kb(pid)) is not None:
                    peaks[pid] = max(peaks.get(pid, 0), kb)
                    names.setdefault(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80])
            time.sleep(SAMPLE_SECONDS)
    print(f"exit {process.returncode} after {time.perf_counter() - started:.1f} s")
    for pid, kb in sorted(peaks.items(), key=lambda item: -item[1]):
        print(f"{pid}  {kb / 1e6:.2f} GB  {names[pid]}")


if __name__ == "__main__":
    main()

"""Where the CPU goes while ``bench/gateway.py`` runs: each process's share of a core every 2 s.

    python bench/cpu_share.py [bench/gateway.py's arguments, e.g. --seconds 8 --fraction 0.25]

Runs bench/gateway.py with those arguments and prints, every two seconds, the CPU that the bench
itself, ``routeyard dev``, ``routeyard gateway``, tansu and Valkey used (percent of one core, from
/proc/<pid>/stat), followed by whatever bench/gateway.py printed in that interval. On a machine with
few cores it shows whether a phase is bound by the whole machine's CPU (the sum near 100% x cores)
or waiting. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 2.0
ROOT = Path(__file__).resolve().parents[1]


def _role(command: str) -> str | None:
    if "bench/gateway.py" in command:
        return "bench"
    if "routeyard.consumers.cli" in command or "/routeyard " in command:
        return "gateway" if " gateway" in command else "dev" if " dev" in command else None
    if "tansu" in command:
        return "tansu"
    if "valkey-server" in command:
        return "valkey"
    return None


def cpu_ticks() -> dict[str, int]:
    """CPU ticks (user + system) so far of each role's processes."""
    ticks: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = _role(command)
        if role is not None:
            ticks[role] = ticks.get(role, 0) + int(fields[11]) + int(fields[12])
    return ticks


def main() -> int:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"cpu_share-{os.getpid()}.txt"
    with out.open("w") as log:
        bench = subprocess.Popen([sys.executable, "bench/gateway.py", *sys.argv[1:]], stdout=log, stderr=log, cwd=ROOT)
    started, before, shown = time.monotonic(), cpu_ticks(), 0
    while bench.poll() is None:
        time.sleep(INTERVAL_S)
        now = cpu_ticks()
        shares = {role: (now[role] - before.get(role, 0)) / TICK / INTERVAL_S * 100 for role in now}
        lines = out.read_text().splitlines()
        printed, shown = lines[shown:], len(lines)
        usage = " ".join(f"{role}={share:4.0f}%" for role, share in sorted(shares.items()))
        print(f"t={time.monotonic() - started:5.1f}s {usage}", flush=True)
        for line in printed:
            print(f"    {line}", flush=True)
        before = now
    return bench.returncode


if __name__ == "__main__":
    raise SystemExit(main())

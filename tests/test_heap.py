"""siamrec.heap: freed large blocks go back to the system (glibc)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
from siamrec.heap import return_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "set" and not return_freed_memory():
    print("unsupported")
    raise SystemExit
base = rss_mib()
for _ in range(3):  # a decoded song's worth, made and freed again and again
    block = np.ones(4_000_000, np.float32)
    del block
print(rss_mib() - base)
"""


def _kept_mib(mode: str) -> float | None:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return None if out.strip() == "unsupported" else float(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
def test_freed_large_blocks_are_returned_to_the_system():
    kept = _kept_mib("set")
    if kept is None:
        pytest.skip("this C library has no mallopt (not glibc)")
    default = _kept_mib("default")
    assert default > 8, f"glibc's default kept only {default:.1f} MiB: the probe no longer shows the problem"
    assert kept < 2, f"{kept:.1f} MiB of freed 16-MiB blocks still resident with the fixed threshold"

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A child that allocates, fills and frees a 64 MiB tensor (the size of a training step's larger
# activations) 24 times, and prints whether the setting applied and the page faults of the last
# 12 times (the heap takes a few rounds to reach its size: measured, at most 7).
CHILD = """
import resource, torch
from briarpatch._memory import keep_freed_memory
applied = keep_freed_memory()
for i in range(24):
    if i == 12:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _child(**env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_freed_blocks_are_reused_instead_of_mapped_afresh():
    kept, kept_faults = _child()
    # Any MALLOC_* variable is the user's own allocator setting: briarpatch leaves it alone
    # (MALLOC_PERTURB_=0 itself changes nothing).
    left, default_faults = _child(MALLOC_PERTURB_="0")
    assert kept and not left
    # glibc's defaults map each block afresh, and the kernel zeroes its 16384 pages every time.
    assert default_faults >= 12 * 16000 and kept_faults < default_faults / 10, (kept_faults, default_faults)

"""kit.memory: freed megabyte blocks are kept for reuse instead of faulting in fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from foresight.kit.memory import keep_freed_memory

_PROBE = """
import resource, sys
import numpy as np
from foresight.kit.memory import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(100):
    rows = 280 + (i * 37) % 80  # a detector's refresh: a few hundred windows, never the same
    x = np.ones((rows, 512))
    y = np.sort((x * 2.0 + 1.0).astype(np.float32), axis=1)
    del x, y
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(applied, after - before)
"""


def _faults(keep_mb: int) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(keep_mb)], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_spares_the_page_faults_of_fresh_blocks() -> None:
    applied, kept = _faults(64)
    default, fresh = _faults(0)
    assert (applied, default) == ("True", "False")
    # 100 rounds of blocks of 0.6-1.5 MB, never twice the same size: by default most rounds
    # fault their pages in afresh (about 75,000 faults here), next to none when kept (1,000).
    assert fresh > 20_000
    assert kept < fresh / 10


def test_nothing_is_changed_when_asked_to_keep_nothing() -> None:
    assert keep_freed_memory(0) is False

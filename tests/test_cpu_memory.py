"""Large CPU tensors in transparent huge pages (utils/cpu_memory.py): far fewer page faults, unless turned off."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

FAULTS = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from utils.cpu_memory import use_huge_pages
use_huge_pages()
import torch

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(2 ** 24)  # 64 MiB, allocated, written and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(min(faults() for _ in range(3)))
"""


def page_faults(setting: Optional[str] = None) -> int:
    """Page faults of a 64 MiB tensor in a fresh process, THP_MEM_ALLOC_ENABLE given as `setting` or unset."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    run = subprocess.run([sys.executable, "-c", FAULTS, str(ROOT)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not THP_MODE.exists() or "[never]" in THP_MODE.read_text(),
                    reason="no transparent huge pages on this system")
def test_large_tensors_take_far_fewer_page_faults_unless_the_environment_turns_it_off():
    on, off = page_faults(), page_faults("0")
    assert off >= 2 ** 26 // 4096 // 2  # 4 KiB pages: one fault per page or so
    assert on * 10 < off, (on, off)

"""Large CPU tensors in transparent huge pages.

Each map of a large image (tens to hundreds of MiB, allocated and freed thousands of times per image) comes
from the system afresh and is faulted in 4 KiB at a time: a 1200x800 SRFlow decode in bf16 took 2.3 million
page faults, a fifth of its time (docs/performance.md, "Page faults on large images"). PyTorch's CPU allocator
can back allocations of 2 MiB and more with transparent huge pages, 512 times fewer faults for the same memory;
it reads THP_MEM_ALLOC_ENABLE once, at its first allocation. The command lines call `use_huge_pages` before
they import torch; THP_MEM_ALLOC_ENABLE=0 in the environment keeps the system's 4 KiB pages.
"""
import os
import sys


def use_huge_pages() -> None:
    """Ask PyTorch for transparent huge pages for large CPU tensors (Linux), unless the environment says
    otherwise. Call it before torch is imported: later it has no effect."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

"""glibc malloc retention (train/malloc.py): a user's own tuning is kept, and freed large blocks are reused.

    python -m pytest tests/train/test_malloc.py -q
"""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from pgolf.train.malloc import retain_freed_memory


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_a_users_malloc_tuning_is_kept(env):
    assert retain_freed_memory(env) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_a_freed_40mb_block_is_reused_without_page_faults():
    assert retain_freed_memory({}) is True  # an environment without malloc tuning: applied

    def faults_of_a_fresh_40mb_tensor() -> int:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(10_000_000, dtype=torch.float32)
        t.fill_(1.0)  # touch every page
        del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

    faults_of_a_fresh_40mb_tensor()  # the first one may grow the heap
    # 40 MB is 9,766 pages, unmapped on free by default (above the 32 MiB dynamic threshold): every cycle faults
    # them all again (9,766 each, measured). Retained, a cycle reuses them; the best of five allows for another
    # allocation landing in the freed block once.
    assert min(faults_of_a_fresh_40mb_tensor() for _ in range(5)) < 1000

"""CPU thread settings that survive a loaded machine (issue 15).

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp in the CPU wheels). By default its worker threads spin
while they wait for work, so when other processes share the cores a spinning thread holds a core that the thread it
waits for needs: on the 2-core development machine with other jobs running, cpu-demo's training step at 2 threads
took 30–35 s instead of 5–6 s at 1 thread (BENCHMARKS.md, "Threads under load"). With OMP_WAIT_POLICY=PASSIVE the
waiting threads sleep; 2 threads then cost no more than 1 under load and keep their speed-up on an idle machine.

libgomp reads the variable once, when PyTorch loads it, so `quiet_openmp_waits()` must run before `import torch`;
`pgolf`'s command line calls it first thing. A policy the user set (even ACTIVE) is kept.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"


def quiet_openmp_waits(environ: dict[str, str] | None = None) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE unless already set; returns the policy in force, or None when torch was already
    imported (too late to change it for this process)."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules and environ is None:
        return env.get(WAIT_POLICY_VAR)
    env.setdefault(WAIT_POLICY_VAR, "PASSIVE")
    return env[WAIT_POLICY_VAR]

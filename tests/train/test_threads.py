"""OpenMP wait policy: the CLI sets PASSIVE before torch loads, and keeps a policy the user chose.

    python -m pytest tests/train/test_threads.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys

from pgolf.train.threads import quiet_openmp_waits


def test_sets_passive_unless_the_user_chose():
    env: dict[str, str] = {}
    assert quiet_openmp_waits(env) == "PASSIVE" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert quiet_openmp_waits(env) == "ACTIVE"


def test_cli_sets_the_policy_before_torch_is_imported():
    code = ("import os, sys; from pgolf.cli import main; rc = main(['presets']); "
            "print('policy', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("policy PASSIVE")
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1].startswith("policy ACTIVE")

"""`import pgolf` (and every stage module) must not initialise CUDA or configure logging (torchao lean import)."""

import subprocess
import sys


def test_import_does_not_initialise_cuda():
    code = (
        "import logging, pgolf, pgolf.cli, pgolf.run, pgolf.config\n"
        "import torch\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised at import'\n"
        "assert not logging.getLogger().handlers, 'logging configured at import'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

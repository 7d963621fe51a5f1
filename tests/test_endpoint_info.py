"""`python -m flows.endpoint_info`: how to call the endpoint, or one clear line when it cannot say."""

from __future__ import annotations

import os
import subprocess
import sys

from tasks.settings import REPO_ROOT


def test_no_emulator_is_one_line_and_exit_1(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("R1_")},
           "R1_EMULATOR_STATE_DIR": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-m", "flows.endpoint_info"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: no emulator is running on") and result.stdout == ""

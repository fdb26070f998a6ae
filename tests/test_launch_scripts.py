"""The Slurm launch script: valid bash, and every `accelerate launch` option it passes exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import REPO

SCRIPT = REPO / "docs" / "slurm.sbatch"


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")
def test_slurm_script_uses_only_real_accelerate_options():
    launch_help = subprocess.run(["accelerate", "launch", "--help"], capture_output=True, text=True, check=True).stdout
    options = set(re.findall(r"(--[a-z_]+)", SCRIPT.read_text().rsplit("accelerate launch", 1)[1]))
    assert {"--num_machines", "--machine_rank", "--main_process_ip", "--config_file"} <= options
    assert not [o for o in options if o not in launch_help]
    configs = re.findall(r"sbatch --nodes=\d+ docs/slurm.sbatch \S+ (\w+)", SCRIPT.read_text())
    assert configs and all((REPO / "accelerate_configs" / f"{name}.yaml").is_file() for name in configs)

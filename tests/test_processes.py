"""`on_main_process`: work done once on the main process reaches every process, and so does its failure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from deita_train.processes import on_main_process

from .conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, sys
    from deita_train.processes import on_main_process, process_state

    state = process_state()
    outcome = {"result": on_main_process(lambda: {"picks": [3, 1, 2], "rank": state.process_index}, "selection")}

    def broken():
        raise ValueError("column 'quality' is not in scored/")

    try:
        on_main_process(broken, "selection")
    except Exception as error:
        outcome["error"] = [type(error).__name__, str(error)]
    state.wait_for_everyone()  # the collectives still line up after the failure
    with open(f"{sys.argv[1]}/rank{state.process_index}.json", "w") as f:
        json.dump(outcome, f)
    state.destroy_process_group()
""")


def test_single_process_runs_the_task_and_raises_its_own_error():
    assert on_main_process(lambda: [1, 2], "selection") == [1, 2]
    with pytest.raises(ZeroDivisionError):
        on_main_process(lambda: 1 / 0, "selection")


@pytest.mark.slow
def test_two_processes_receive_the_main_process_result_and_failure(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    main, other = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert main["result"] == other["result"] == {"picks": [3, 1, 2], "rank": 0}  # computed once, on rank 0
    assert main["error"] == ["ValueError", "column 'quality' is not in scored/"]
    assert other["error"] == ["MainProcessError",
                              "selection failed on the main process: ValueError: column 'quality' is not in scored/"]

"""The README's curl walk-through, pasted into a fresh shell against a real `sagan up` (#26: an
`alias curl` in it broke in a script). Only the port, the data directory and the step count are
changed; the shell waits for the job to end where the README says "once it has a checkpoint"."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
from servicekit import ProcessGroup, free_port, service_env, wait_healthy, wait_job

README = Path(__file__).resolve().parents[2] / "README.md"
CHECKPOINT_LINE = "# once it has a checkpoint"


def walkthrough() -> str:
    text = README.read_text()
    start = text.index("## Train a digit model and look at a 3 (curl walk-through)")
    return re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)


def test_the_readme_walkthrough_runs_pasted_into_a_shell(tmp_path) -> None:
    script = walkthrough()
    assert "alias " not in script and CHECKPOINT_LINE in script
    port = free_port()
    script = script.replace("localhost:8000", f"localhost:{port}").replace(
        '"steps": 2000', '"steps": 6'
    )
    first, rest = script.split(CHECKPOINT_LINE, 1)
    env = service_env()
    env.pop("SAGAN_ADMIN_TOKEN")  # the first start keeps its token in data/token, as for a user
    with ProcessGroup(tmp_path) as group:
        up = group.start(
            ["up", "--port", str(port), "--data-dir", str(tmp_path / "data")], env, "up"
        )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, up)
        up.wait_for(r"SAGAN is up:", 60)
        shell = first + '\necho "JOB=$JOB"\n'
        out = subprocess.run(["bash", "-euc", shell], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        job_id = re.search(r"JOB=([0-9a-f]{32})", out.stdout).group(1)
        assert (
            '"state"' in out.stdout and "name,step,value" in (tmp_path / "metrics.csv").read_text()
        )
        token = (tmp_path / "data" / "token").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            wait_job(client, job_id, ("succeeded",), 300, up)
        auth = first.split("\n", 1)[0]  # a fresh shell: the token line again, and the job's id
        shell = f"JOB={job_id}\n{auth}\n{CHECKPOINT_LINE}{rest}"
        out = subprocess.run(["bash", "-euc", shell], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
    for png in ("threes.png", "attention.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (
        "SAGAN_INCEPTION_WEIGHTS" in out.stdout
    )  # the evaluation is refused, saying how to allow it

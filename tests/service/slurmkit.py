"""A real Slurm cluster of its own for one test (issue #25): munged, slurmctld and two slurmd
node daemons (n1 and n2, one CPU each) on this machine, on free ports, everything under a
temporary directory; Debian's slurm-wlm and munge (scripts/ensure-services.sh installs them).
Nothing of the machine's own is touched: clients find it through SLURM_CONF."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

NODES = ("n1", "n2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.pids: list[Path] = []

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (Debian's slurm-wlm and munge)")
        r = self.root
        munge = r / "munge"
        munge.mkdir(mode=0o700, parents=True)
        (r / "spool").mkdir()
        (r / "state").mkdir()
        key = munge / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        socket_path = munge / "munge.socket"
        subprocess.run(
            ["munged", f"--key-file={key}", f"--socket={socket_path}",
             f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
             f"--seed-file={munge / 'seed'}", "--force"],
            check=True,
        )  # fmt: skip
        self.pids.append(munge / "munged.pid")
        host = socket.gethostname().split(".")[0]
        ctl, node_ports = _free_port(), [_free_port() for _ in NODES]
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=1 State=UNKNOWN"
            for n, p in zip(NODES, node_ports, strict=True)
        )
        self.conf.write_text(f"""\
ClusterName=sagantest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctl}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}/%n
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=5
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        env = {**os.environ, **self.env}
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=env)
        self.pids.append(r / "slurmctld.pid")
        for n in NODES:
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", n], check=True, env=env)
            self.pids.append(r / f"slurmd-{n}.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.run("sinfo", "--noheader", "--format=%t %D").stdout.split()
            if out[:2] == ["idle", str(len(NODES))]:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: {out}\n{self.logs()}")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, capture_output=True, text=True, env={**os.environ, **self.env}, check=False
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        self.run("scancel", "--user=root")  # the allocations' processes go with their steps
        time.sleep(1)
        for pid_file in reversed(self.pids):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        time.sleep(0.5)
        for pid_file in self.pids:
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

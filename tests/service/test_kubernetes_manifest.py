"""The Kubernetes JobSet of a two-node job (issue #25), checked against the JobSet CRD's own
schema (vendored from kubernetes-sigs/jobset: worker/jobset-v1alpha2.json): it renders and
validates, its pods run the Slurm allocation's command, and a wrong manifest is caught."""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from store.settings import Settings
from worker.kubernetes import render_jobset, validation_errors
from worker.slurm import batch_script

JOB = "0123456789abcdef0123456789abcdef"


def two_nodes() -> dict:
    return render_jobset(
        JOB, "w1", nodes=2, gpus=8, image="registry/sagan-worker:1", queue="gpu",
        claim="sagan-runs", secret="sagan-settings",
    )  # fmt: skip


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def test_a_two_node_jobset_matches_the_crd_schema_and_asks_kueue_for_its_gpus() -> None:
    manifest = two_nodes()
    assert validation_errors(manifest) == []
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 2 and job["completionMode"] == "Indexed"
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    [container] = pod_spec(manifest)["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_the_pods_run_the_slurm_allocations_command() -> None:
    [container] = pod_spec(two_nodes())["containers"]
    run_dir = Path(f"/runs/job-{JOB}")
    settings = Settings(slurm_python="python", slurm_max_restarts=1)
    script = batch_script(JOB, "w1", {"nodes": 2, "gpus": 8}, settings, run_dir)
    [srun] = [line for line in script.splitlines() if line.startswith("srun ")]
    slurm = shlex.split(srun.removesuffix(" &"))
    slurm = slurm[slurm.index("python") :]  # after srun's own flags
    name = f"sagan-{JOB[:12]}"
    kube = [
        a.replace(f"{name}-node-0-0.{name}:29500", "$addr:$port").replace(
            name, "sagan-$SLURM_JOB_ID"
        )
        for a in container["command"]
    ]
    assert kube == slurm
    assert "--nnodes=2" in kube and "--nproc-per-node=8" in kube


def test_a_wrong_manifest_is_named_by_the_check() -> None:
    typo = two_nodes()
    job = typo["spec"]["replicatedJobs"][0]["template"]["spec"]
    job["parallelizm"] = job.pop("parallelism")
    assert any("parallelizm" in e for e in validation_errors(typo)), validation_errors(typo)
    wrong_type = copy.deepcopy(two_nodes())
    wrong_type["spec"]["replicatedJobs"][0]["replicas"] = "one"
    [error] = validation_errors(wrong_type)
    assert error.startswith("spec.replicatedJobs.0.replicas: 'one' is not of type 'integer'")
    no_image = copy.deepcopy(two_nodes())
    del pod_spec(no_image)["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in validation_errors(no_image))


def test_the_command_line_prints_the_checked_manifest() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker.kubernetes", JOB, "--nodes", "2", "--gpus", "8",
         "--image", "registry/sagan-worker:1", "--queue", "gpu", "--claim", "sagan-runs",
         "--worker", "w1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert yaml.safe_load(done.stdout) == two_nodes()

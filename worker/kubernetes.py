"""A train job of `nodes` machines as a Kubernetes JobSet (issue #25), on paper: the manifest is
rendered and checked against the JobSet CRD's own schema, and no launcher submits it yet.

One replicated Job of `nodes` indexed pods (one per machine, each with `gpus` GPUs) runs the very
command a Slurm allocation's node runs (worker.slurm.agent_command): a torchrun agent whose c10d
rendezvous is pod 0's stable DNS name (JobSet's headless service). Kueue's queue label asks for
all-or-nothing admission of the pods; `failurePolicy.maxRestarts` 0 because the service counts the
attempts itself (the claiming worker requeues a lost run). The run directory is a shared volume
(a ReadWriteMany claim), as on Slurm; the service's settings come from a Secret.

    python -m worker.kubernetes JOB_ID --nodes 2 --gpus 8 --image registry/sagan-worker:tag \
        --queue gpu-queue --claim sagan-runs --secret sagan-settings > jobset.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import yaml

from worker.slurm import agent_command

# The JobSet CRD schema, written by scripts/vendor_jobset_schema.py
SCHEMA = Path(__file__).resolve().with_name("jobset-v1alpha2.json")
RDZV_PORT = 29500
RUN_ROOT = "/runs"
REPLICATED_JOB = "node"


def render_jobset(
    job_id: str,
    worker: str,
    *,
    nodes: int,
    gpus: int,
    image: str,
    queue: str,
    claim: str,
    secret: str,
    namespace: str = "default",
    max_restarts: int = 1,
) -> dict[str, Any]:
    """The JobSet of a job's run; `worker` is the claiming worker's name, as on Slurm."""
    name = f"sagan-{job_id[:12]}"
    work = Path(RUN_ROOT) / f"job-{job_id}"
    # JobSet names pod i of replicated job r: <jobset>-<r>-0-<i>, resolvable as
    # <pod>.<jobset> with network.enableDNSHostnames (the subdomain defaults to the JobSet's name).
    head = f"{name}-{REPLICATED_JOB}-0-0.{name}"
    command = agent_command("python", nodes, gpus, max_restarts, job_id, worker, work)
    command = [
        a.replace("RDZV_ENDPOINT", f"{head}:{RDZV_PORT}").replace("RDZV_ID", name) for a in command
    ]
    container = {
        "name": "rank",
        "image": image,
        "command": command,
        "env": [
            {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "envFrom": [{"secretRef": {"name": secret}}],
        "ports": [{"containerPort": RDZV_PORT, "name": "rendezvous"}],
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
        "volumeMounts": [{"name": "runs", "mountPath": RUN_ROOT}],
    }
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kueue.x-k8s.io/queue-name": queue,
                "app.kubernetes.io/name": "sagan",
                "sagan/job-id": job_id,
            },
        },
        "spec": {
            "failurePolicy": {"maxRestarts": 0},
            "network": {"enableDNSHostnames": True},
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": nodes,
                            "completions": nodes,
                            "completionMode": "Indexed",
                            "backoffLimit": 0,
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [container],
                                    "volumes": [
                                        {
                                            "name": "runs",
                                            "persistentVolumeClaim": {"claimName": claim},
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def strict(schema: Any) -> Any:
    """The CRD schema as `kubectl apply --validate=strict` reads it: a field the schema does not
    name is an error (the API server would drop it silently), except where it keeps unknown
    fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validation_errors(manifest: dict) -> list[str]:
    """What the JobSet CRD's schema finds wrong in `manifest` (empty: none)."""
    import jsonschema

    crd = json.loads(SCHEMA.read_text())
    schema = strict(copy.deepcopy(crd["openAPIV3Schema"]))
    errors = []
    api = f"{crd['group']}/{crd['version']}"
    if manifest.get("apiVersion") != api or manifest.get("kind") != crd["kind"]:
        errors.append(f"apiVersion/kind: must be {api} {crd['kind']}")
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        errors.append(f"{where}: {e.message}")
    return errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job_id")
    parser.add_argument("--worker", default="kubernetes", help="the claiming worker's name")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per node")
    parser.add_argument("--image", required=True, help="docker/worker.Dockerfile's image")
    parser.add_argument("--queue", required=True, help="Kueue LocalQueue")
    parser.add_argument("--claim", required=True, help="ReadWriteMany PVC for the run directories")
    parser.add_argument("--secret", default="sagan-settings", help="Secret of SAGAN_* settings")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    manifest = render_jobset(
        args.job_id, args.worker, nodes=args.nodes, gpus=args.gpus, image=args.image,
        queue=args.queue, claim=args.claim, secret=args.secret, namespace=args.namespace,
    )  # fmt: skip
    errors = validation_errors(manifest)
    if errors:
        raise SystemExit("the manifest does not match the JobSet schema:\n" + "\n".join(errors))
    print(yaml.safe_dump(manifest, sort_keys=False), end="")


if __name__ == "__main__":
    main()

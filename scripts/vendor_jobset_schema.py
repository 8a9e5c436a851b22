"""Write the JobSet CRD's OpenAPI schema (kubernetes-sigs/jobset, Apache-2.0) without its
descriptions, for worker.kubernetes' manifest check (issue #25):

    python scripts/vendor_jobset_schema.py jobset.x-k8s.io_jobsets.yaml v0.13.0-devel-43-g08dfbdfd

The CRD is config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml of that repository; its
descriptions are 90% of its 800 kB and no part of what it validates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "worker" / "jobset-v1alpha2.json"


def strip(node):  # noqa: ANN001, ANN201
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main() -> None:
    crd_path, version = sys.argv[1], sys.argv[2]
    crd = yaml.safe_load(Path(crd_path).read_text())
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    schema = strip(served["schema"]["openAPIV3Schema"])
    out = {
        "source": f"kubernetes-sigs/jobset {version}, {crd_path.split('/')[-1]} (Apache-2.0)",
        "group": crd["spec"]["group"],
        "version": served["name"],
        "kind": crd["spec"]["names"]["kind"],
        "openAPIV3Schema": schema,
    }
    OUT.write_text(json.dumps(out, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

"""Re-vendor the Kubernetes core/v1 schemas that KubeRay's CRDs embed (pod templates, services, env, ...).

Source: the strict ("additionalProperties: false") JSON Schemas of the Kubernetes OpenAPI spec shipped by
the PyPI package kubernetes-validate. Only the definitions reachable from the roots below are kept, with
descriptions dropped, so the vendored file stays small. Run from the repository root:

    pip download kubernetes-validate==1.37.0 --no-deps -d /tmp/kv
    python infra/k8s/schemas/vendor_k8s_core.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

K8S_VERSION = "v1.31.0"
ROOTS = [
    "io.k8s.api.core.v1.PodTemplateSpec",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.EnvVarSource",
    "io.k8s.api.core.v1.EnvFromSource",
    "io.k8s.api.core.v1.VolumeMount",
    "io.k8s.api.core.v1.SecurityContext",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
]
OUT = Path(__file__).with_name(f"k8s-core-{K8S_VERSION}-strict.json")
REF_PREFIX = "#/$defs/"


def _strip(node: Any, refs: set[str]) -> Any:
    """Drop descriptions and collect the names of referenced definitions."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            refs.add(node["$ref"].removeprefix(REF_PREFIX))
        return {k: _strip(v, refs) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v, refs) for v in node]
    return node


def closure(defs: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        refs: set[str] = set()
        kept[name] = _strip(defs[name], refs)
        todo.extend(refs - kept.keys())
    return dict(sorted(kept.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="kubernetes-validate wheel")
    args = parser.parse_args()
    member = f"kubernetes_validate/kubernetes-json-schema/{K8S_VERSION}-local-strict/_definitions.json"
    with zipfile.ZipFile(args.wheel) as wheel:
        source = json.loads(wheel.read(member))
    vendored = {
        "$schema": source["$schema"],
        "$id": f"https://anytime.invalid/schemas/k8s-core-{K8S_VERSION}-strict.json",
        "$comment": f"Kubernetes {K8S_VERSION} strict core schemas from {args.wheel.name}; see README.md",
        "$defs": closure(source["$defs"], ROOTS),
    }
    OUT.write_text(json.dumps(vendored, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {len(vendored['$defs'])} definitions")


if __name__ == "__main__":
    main()

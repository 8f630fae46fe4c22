"""KubeRay manifests validate strictly against the vendored CRD-derived schemas (infra/k8s/schemas/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
MANIFESTS = sorted(K8S.glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    (kuberay,) = [s for s in schemas if s["$id"].endswith("/kuberay-v1.json")]
    jsonschema.Draft202012Validator.check_schema(kuberay)
    return jsonschema.Draft202012Validator(kuberay, registry=registry)


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _errors(validator, manifest) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def test_both_kinds_are_present():
    assert {yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS} == {
        "RayCluster",
        "RayJob",
        "RayService",
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(validator, path):
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize(
    ("name", "where", "typo"),
    [
        ("rayjob-pipeline.yaml", ["spec"], "entryPoint"),
        ("raycluster.yaml", ["spec", "workerGroupSpecs", 0], "maxReplica"),
        ("raycluster.yaml", ["spec", "headGroupSpec", "template", "spec", "containers", 0], "imagePullPolcy"),
        ("raycluster.yaml", ["spec", "autoscalerOptions"], "idleTimeoutSecs"),
        ("rayservice-serving.yaml", ["spec"], "serveConfig"),
        ("rayservice-serving.yaml", ["spec", "upgradeStrategy"], "kind"),
    ],
)
def test_misspelled_field_is_rejected(validator, name, where, typo):
    manifest = copy.deepcopy(_load(name))
    node = manifest
    for key in where:
        node = node[key]
    node[typo] = node.get(typo, "x")
    assert validator.is_valid(_load(name))
    assert not validator.is_valid(manifest), f"{typo} at {where} was accepted"


def test_wrong_type_and_enum_are_rejected(validator):
    manifest = _load("raycluster.yaml")
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"
    manifest["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    messages = " ".join(_errors(validator, manifest))
    assert "'8' is not of type 'integer'" in messages and "'Fast' is not one of" in messages


def test_job_targets_the_cluster_and_all_pods_use_the_launcher_image():
    cluster, job = _load("raycluster.yaml"), _load("rayjob-pipeline.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"], job["spec"]]
    templates = [g.get("template") or g["submitterPodTemplate"] for g in groups]
    images = {c["image"] for t in templates for c in t["spec"]["containers"]}
    launcher = yaml.safe_load((ROOT / "infra" / "ray" / "cluster-aws.yaml").read_text())
    assert images == {launcher["docker"]["image"]}
    gpu_group = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert gpu_group["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert cluster["spec"]["rayVersion"] == ray.__version__


def test_every_pod_authenticates_with_the_cluster_token():
    cluster, job = _load("raycluster.yaml"), _load("rayjob-pipeline.yaml")
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    templates = [g["template"] for g in groups] + [job["spec"]["submitterPodTemplate"]]
    for template in templates:
        env = {e["name"]: e for c in template["spec"]["containers"] for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "anytime-ray-auth"


def test_pipeline_job_keeps_shards_and_run_storage_on_s3():
    """Worker pods cannot read the head's disk: the job points every path the workers read or write at S3."""
    job = _load("rayjob-pipeline.yaml")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    overrides = dict(
        arg.removeprefix("++").partition("=")[::2]
        for arg in job["spec"]["entrypoint"].split()
        if arg.removeprefix("++").startswith(("train.", "tune."))
    )
    assert overrides == {
        "train.shards": '"$ANYTIME_SHARDS"',
        "train.storage_path": '"$ANYTIME_STORAGE"',
        "tune.storage_path": '"$ANYTIME_STORAGE/tune"',
    }
    assert env["ANYTIME_SHARDS"].startswith("s3://") and env["ANYTIME_STORAGE"].startswith("s3://")


def test_service_deploys_the_server_app_with_serve_s_own_schema():
    """serveConfigV2 is a valid Serve config: the application serving.app:build, with arguments it takes."""
    from ray.serve.schema import ServeDeploySchema

    from serving.app import ServerSettings

    service, cluster = _load("rayservice-serving.yaml"), _load("raycluster.yaml")
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (app,) = config.applications
    assert app.import_path == "serving.app:build"
    assert set(app.args) - {"outputs", "name", "members"} <= set(ServerSettings.model_fields)
    (deployment,) = app.deployments
    assert deployment.name == "anytime" and deployment.autoscaling_config["max_replicas"] > 1
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]

"""deploy/k8s without a cluster: every kustomization renders (``kubectl kustomize``, offline), every
object validates against Kubernetes' OpenAPI schemas (kubernetes-validate ships them), KEDA's
ScaledObject against a schema of its own fields we use, and the invariants the docs promise hold.
What needs a cluster (scheduling, probes answering, the router finding pods, KEDA scaling) is not
checked here; docs/scale-out.md says so."""

import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from llmloop.serve.config import ServerConfig

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUSTOMIZATIONS = ["", "overlays/keda", "overlays/hpa", "overlays/cuda"]
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported by the main clouds

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e .[test]")
pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed: cannot render kustomize"
)

# KEDA's CRD is not in the core schemas: the fields we rely on, with their types (threshold is a
# string in KEDA's API; a number is rejected by the cluster, not by kubectl).
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"behavior": {"type": "object"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "prometheus"},
                            "metadata": {
                                "type": "object",
                                "required": ["serverAddress", "query", "threshold"],
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def render(kustomization: str) -> list[dict]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def serve_container(objects: list[dict]) -> dict:
    deployment = find(objects, "Deployment", "llmloop-serve")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_validates(rendered: dict[str, list[dict]], kustomization: str) -> None:
    for obj in rendered[kustomization]:
        if obj["kind"] == "ScaledObject":
            jsonschema.validate(obj, SCALED_OBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == "llmloop", obj["metadata"]["name"]


def test_probes_ask_health(rendered: dict[str, list[dict]]) -> None:
    container = serve_container(rendered[""])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "engine start: minutes"


def test_grace_period_outlasts_prestop_and_drain(rendered: dict[str, list[dict]]) -> None:
    pod = find(rendered[""], "Deployment", "llmloop-serve")["spec"]["template"]["spec"]
    container = serve_container(rendered[""])
    drain_flags = [a for a in container["args"] if a.startswith("--drain-timeout=")]
    drain_s = float(drain_flags[0].split("=")[1]) if drain_flags else ServerConfig.drain_timeout_s
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(prestop[1]) + drain_s


def test_service_ports_reach_the_containers(rendered: dict[str, list[dict]]) -> None:
    objects = rendered[""]
    for service, deployment in [("llmloop-serve", "llmloop-serve"), ("llmloop", "llmloop-router")]:
        pod = find(objects, "Deployment", deployment)["spec"]["template"]
        selector = find(objects, "Service", service)["spec"]["selector"]
        assert selector.items() <= pod["metadata"]["labels"].items(), service
        port_names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        for port in find(objects, "Service", service)["spec"]["ports"]:
            assert port["targetPort"] in port_names, service
    container = serve_container(objects)
    assert "--port=8000" in container["args"]
    assert container["ports"][0]["containerPort"] == 8000


def test_router_discovers_the_serve_pods(rendered: dict[str, list[dict]]) -> None:
    objects = rendered[""]
    router = find(objects, "Deployment", "llmloop-router")["spec"]["template"]["spec"]
    args = router["containers"][0]["args"]
    selector = args[args.index("--selector") + 1]
    key, value = selector.split("=")
    serve_labels = find(objects, "Deployment", "llmloop-serve")["spec"]["template"]["metadata"]
    assert serve_labels["labels"][key] == value
    assert "--service-discovery-port=8000" in args
    role = find(objects, "Role", "llmloop-router")
    assert {"list", "watch"} <= set(role["rules"][0]["verbs"])
    assert router["serviceAccountName"] == "llmloop-router"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_database_url_only_from_a_secret(
    rendered: dict[str, list[dict]], kustomization: str
) -> None:
    for obj in rendered[kustomization]:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            assert not any(a.startswith(("--db", "postgresql")) for a in container.get("args", []))
            for env in container.get("env", []):
                if env["name"] in ("LLMLOOP_DB", "POSTGRES_PASSWORD"):
                    assert "value" not in env, env["name"]
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "llmloop-db"
    assert not [o for o in rendered[kustomization] if o["kind"] == "Secret"]


def test_autoscalers_target_the_replicas(rendered: dict[str, list[dict]]) -> None:
    scaled = find(rendered["overlays/keda"], "ScaledObject", "llmloop-serve")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "llmloop-serve"
    assert "vllm:num_requests_waiting" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    hpa = find(rendered["overlays/hpa"], "HorizontalPodAutoscaler", "llmloop-serve")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llmloop-serve"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"


def test_cuda_overlay_asks_for_a_gpu(rendered: dict[str, list[dict]]) -> None:
    container = serve_container(rendered["overlays/cuda"])
    assert container["image"].endswith(":cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1

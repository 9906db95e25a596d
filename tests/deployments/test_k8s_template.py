"""The Kubernetes work pool variant (deployments/k8s/), without a cluster: the base job template has
prefect-kubernetes' shape and every placeholder is a declared, described variable; each
deployment of deployments/k8s/prefect.yaml renders a complete Job; the file mirrors prefect.yaml;
failure handling runs on another region's worker; and a real Prefect server accepts the pool
(created with the README's command) and a run of every deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prefect.utilities.templating import PlaceholderType
from prefect.utilities.templating import apply_values
from prefect.utilities.templating import find_placeholders

from sandbox.harness import poll
from sandbox.prefect_server import PrefectServer

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deployments" / "k8s"
TEMPLATE = K8S / "base-job-template.json"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/chalk-dr:1.0.0"
REGIONS = [
    r["aws_region"]
    for r in yaml.safe_load((ROOT / "deployments" / "topology.example.yaml").read_text())["regions"]
]
PRIMARY = "us-east-1"
SHARED_QUEUE = "any-region"
# Per-region variants in the Kubernetes file of one deployment in prefect.yaml, and the parameter
# naming the region each is for.
REGIONAL = {"failover": ("failover-from-", "from_region"), "failback": ("failback-to-", "to_region")}


def template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text()))


def variables() -> dict[str, Any]:
    return dict(template()["variables"])


def k8s_entries() -> list[dict[str, Any]]:
    return list(yaml.safe_load((K8S / "prefect.yaml").read_text())["deployments"])


def process_entries() -> list[dict[str, Any]]:
    return list(yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"])


def job_variables(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's job variables as `prefect deploy` sends them: `{{ $NAME }}` read from the
    environment (the test sets CHALK_DR_IMAGE)."""
    return dict(apply_values(entry["work_pool"]["job_variables"], {}))


def render(values: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker gets: variable defaults, overridden by the job variables."""
    props = variables()["properties"]
    merged = {name: p["default"] for name, p in props.items() if "default" in p} | values
    return dict(apply_values(template()["job_configuration"], merged))


def test_the_template_has_prefect_kubernetes_shape() -> None:
    t = template()
    assert set(t) == {"job_configuration", "variables"}
    config = t["job_configuration"]
    # The fields of prefect-kubernetes' KubernetesWorkerJobConfiguration this template sets.
    assert {"command", "env", "labels", "name", "namespace", "job_manifest"} <= set(config)
    assert set(config) <= {
        "command", "env", "labels", "name", "namespace", "job_manifest", "cluster_config",
        "job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output",
    }  # fmt: skip
    job = config["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    # A runbook pod is never restarted by Kubernetes: a second drill would inject twice.
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"  # the container the worker fills in (its base manifest)
    assert container["args"] == "{{ command }}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert variables()["type"] == "object"


def test_every_placeholder_is_a_declared_variable_and_every_variable_is_used() -> None:
    placeholders = find_placeholders(json.dumps(template()["job_configuration"]))
    assert all(p.type is PlaceholderType.STANDARD for p in placeholders)  # no env or block lookups
    used = {p.name for p in placeholders}
    declared = set(variables()["properties"])
    assert used - declared == set(), "placeholders without a variable"
    assert declared - used == set(), "variables no placeholder uses"


def test_every_variable_is_described_and_its_default_valid() -> None:
    schema = variables()
    for name, prop in schema["properties"].items():
        assert prop.get("title") and prop.get("description", "").strip(), name
        if "default" in prop:
            jsonschema.validate(prop["default"], prop)
    # No usable default exists for these: the stock Prefect image has no chalk-dr, and every flow
    # has its own AWS role. A run without them is refused when it is created.
    for name in ("image", "service_account_name"):
        assert name in schema["required"] and "default" not in schema["properties"][name]
    jsonschema.validate({"image": IMAGE, "service_account_name": "chalk-dr-drill"}, schema)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image", "{{ $CHALK_DR_IMAGE }}"),  # deployed without CHALK_DR_IMAGE set
        ("image", ""),
        ("heartbeat_frequency", "180"),  # Prefect's default: the zombie automation would crash live runs
        ("heartbeat_frequency", "20"),  # below Prefect's minimum
        ("cpu_limit", "lots"),
        ("memory_request", "-1Gi"),
        ("service_account_name", "Chalk_DR"),
        ("namespace", "chalk.dr"),
        ("termination_grace_period_seconds", 5),
    ],
)
def test_the_pool_refuses_a_bad_job_variable(name: str, value: Any) -> None:
    values = {"image": IMAGE, "service_account_name": "chalk-dr-drill", name: value}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, variables())


@pytest.mark.parametrize("entry", k8s_entries(), ids=lambda e: e["name"])
def test_each_deployment_renders_a_complete_job(
    entry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHALK_DR_IMAGE", IMAGE)
    values = job_variables(entry)
    jsonschema.validate(values, variables())  # what the server checks when a run is created
    config = render(values)
    assert "{{" not in json.dumps(config), "a placeholder left unrendered"
    job = config["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert pod["serviceAccountName"] == values["service_account_name"]
    assert job["metadata"]["namespace"] == config["namespace"] == "chalk-dr"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "CHALK_DR_HOME": "/opt/chalk-dr",  # the pull step's directory (the Dockerfile's WORKDIR)
        "CHALK_DR_TOPOLOGY_DIR": "/etc/chalk-dr/topologies",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60",
    }
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["CHALK_DR_TOPOLOGY_DIR"] and mount["readOnly"] is True
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and volume["configMap"]["name"] == "chalk-dr-topologies"
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert pod["terminationGracePeriodSeconds"] >= 60  # the drill's undo runs on SIGTERM


def test_the_kubernetes_file_mirrors_prefect_yaml() -> None:
    """Same deployments as prefect.yaml, same forms and schedules; only the pool, the queue and the
    job variables differ, and failover/failback come once per region they are for."""
    k8s = {e["name"]: e for e in k8s_entries()}
    compared = (
        "entrypoint",
        "tags",
        "enforce_parameter_schema",
        "concurrency_limit",
        "schedules",
        "triggers",
    )
    expected_names = set()
    for base in process_entries():
        if base["entrypoint"].rsplit(":", 1)[1] in REGIONAL:
            prefix, param = REGIONAL[base["entrypoint"].rsplit(":", 1)[1]]
            variants = {name: e for name, e in k8s.items() if name.startswith(prefix)}
            assert {name.removeprefix(prefix) for name in variants} == set(REGIONS), base["name"]
            for name, entry in variants.items():
                assert entry["parameters"] == {**base["parameters"], param: name.removeprefix(prefix)}
        else:
            variants = {base["name"]: k8s[base["name"]]}
            entry = variants[base["name"]]
            assert entry["parameters"] == base["parameters"]
            assert entry["description"] == base["description"]
        for entry in variants.values():
            for key in compared:
                assert entry.get(key) == base.get(key), (entry["name"], key)
            assert entry["work_pool"]["name"] == "chalk-dr-k8s"
        expected_names |= set(variants)
    assert set(k8s) == expected_names


def test_failure_handling_runs_on_another_regions_worker() -> None:
    """A worker in the failed region cannot fail it over: each runbook aimed at a region runs on
    the queue of a worker elsewhere; work aimed at no region runs on whichever worker is up."""
    entries = {e["name"]: e for e in k8s_entries()}
    queue = {name: e["work_pool"]["work_queue_name"] for name, e in entries.items()}
    assert set(queue.values()) <= {*REGIONS, SHARED_QUEUE}
    for region in REGIONS:
        assert queue[f"failover-from-{region}"] not in (region, SHARED_QUEUE)
        assert queue[f"failback-to-{region}"] not in (region, SHARED_QUEUE)
    for name, entry in entries.items():
        if entry["entrypoint"] == "flows/drill.py:drill":  # drills fail the primary
            assert queue[name] not in (PRIMARY, SHARED_QUEUE), name
    # Readiness runs on the worker that would fail the primary over: a Late run says it is down.
    assert queue["recovery-readiness"] == queue[f"failover-from-{PRIMARY}"]
    assert queue["sweep-hourly"] == SHARED_QUEUE  # repairs whatever worker is alive


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    server = PrefectServer.start(tmp_path / "prefect-home", ui=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def _unless_503(resp: httpx.Response) -> httpx.Response | None:
    """The response, or None while the server answers 503 Service Unavailable."""
    return None if resp.status_code == 503 else resp


@pytest.mark.timeout(600)
def test_a_prefect_server_accepts_the_pool_and_a_run_of_every_deployment(server: PrefectServer) -> None:
    """The README's commands against a real server: the pool is created with this template, every
    deployment deploys, and the server (which checks job variables against the template) creates
    a run of each; a run that overrides a variable badly is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHALK_DR_"))}
    env.update(
        PREFECT_HOME=str(server.home),
        PREFECT_API_URL=server.api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )

    def prefect(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=ROOT,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def ok(done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    ok(
        prefect(
            "work-pool",
            "create",
            "chalk-dr-k8s",
            "--type",
            "kubernetes",
            "--base-job-template",
            str(TEMPLATE),
        )
    )
    k8s_file = str(K8S / "prefect.yaml")
    ok(prefect("--no-prompt", "deploy", "--all", "--prefect-file", k8s_file, extra={"CHALK_DR_IMAGE": IMAGE}))

    with httpx.Client(base_url=server.api_url, timeout=30, trust_env=False) as http:
        deployments = {d["name"]: d for d in http.post("/deployments/filter", json={}).json()}
        queues = {q["name"] for q in http.post("/work_pools/chalk-dr-k8s/queues/filter", json={}).json()}
        assert queues >= {*REGIONS, SHARED_QUEUE}  # a deployment's queue is created with it
        assert set(deployments) == {e["name"] for e in k8s_entries()}
        sha = uuid.uuid4().hex[:12]
        for name, d in deployments.items():
            assert d["work_queue_name"] == next(
                e["work_pool"]["work_queue_name"] for e in k8s_entries() if e["name"] == name
            )
            parameters = {"sha": sha, "repo_url": "acme/features"} if name == "chalk-apply-on-push" else {}
            # 503 is the server's "retry later" (a busy SQLite: Prefect's own client retries it)
            run = poll(
                lambda d=d, parameters=parameters: _unless_503(
                    http.post(f"/deployments/{d['id']}/create_flow_run", json={"parameters": parameters})
                ),
                timeout=60,
                what="the server to accept the run",
                every=0.5,
            )
            assert run.status_code == 201, (name, run.text)
        bad = http.post(
            f"/deployments/{deployments['drill-manual']['id']}/create_flow_run",
            json={"job_variables": {"cpu_limit": "lots"}},
        )
        assert bad.status_code in (409, 422) and "lots" in bad.text


def test_the_dockerfile_builds_what_the_template_expects() -> None:
    """Read, not built (no Docker here): the image holds the packages and the entrypoints' files,
    lives where CHALK_DR_HOME points, runs as the pod's user, and names Chalk's own CLI."""
    dockerfile = (K8S / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert "FROM python:3.11-slim" in lines
    props = variables()["properties"]
    assert f"WORKDIR {props['chalk_dr_home']['default']}" in lines
    copied = {
        line.split()[1].rstrip("/") for line in lines if line.startswith("COPY ") and line.endswith("/")
    }
    packages = {"chalkdr", "tasks", "flows"}  # what the flows import (not the sandbox)
    entrypoint_dirs = {e["entrypoint"].split("/", 1)[0] for e in k8s_entries()}
    assert packages | entrypoint_dirs | {"deployments"} <= copied and "sandbox" not in copied
    pod = template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert f"USER {pod['securityContext']['runAsUser']}" in lines
    assert "CHALK_DR_CHALK_BIN=/usr/local/bin/chalk" in dockerfile  # not the sandbox's stand-in
    assert "pip install --no-cache-dir ." in dockerfile

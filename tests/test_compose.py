"""docker-compose.yml without a Docker engine: its rules, then its services run as local processes."""

from __future__ import annotations

import json
import re
import time

import pytest
from compose_rig import ROOT, Rig, can_use_namespaces, interpolate, load_compose, read_env_file

from analysis.stats import load_records

SERVICES = {"mock", "master", "master-headless", "worker", "analysis"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def test_compose_file_follows_the_rules_that_matter():
    compose = load_compose()
    services = compose["services"]
    assert set(services) == SERVICES
    env_example = read_env_file(ROOT / ".env.example")
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    for name, service in services.items():
        assert service.get("build") == "." and service.get("image"), name
        assert isinstance(service["command"], list) and all(isinstance(a, str) for a in service["command"]), name
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), f"{name}: {port} must bind 127.0.0.1"
        for volume in service.get("volumes", []):
            assert volume == "./results:/results", f"{name}: {volume}"
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services and spec["condition"] in CONDITIONS, name
        for variable in re.findall(r"\$\{([A-Z_]+)", json.dumps(service)):
            assert variable in env_example, f"{name} uses ${{{variable}}}, missing from .env.example"
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)(api_key|token|secret|password)\s*[:=]\s*\S", text), "no secret in the file"
    assert services["mock"]["healthcheck"]["test"][0] == "CMD"
    assert "/health" in " ".join(services["mock"]["healthcheck"]["test"])
    assert services["master"]["profiles"] == ["ui"] and services["master-headless"]["profiles"] == ["headless"]
    assert services["master-headless"]["networks"]["default"]["aliases"] == ["master"]
    assert "--master-host" in services["worker"]["command"] and "master" in services["worker"]["command"]
    assert services["analysis"]["depends_on"] == {"master-headless": {"condition": "service_completed_successfully"}}
    assert "replicas" in services["mock"]["deploy"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY data ./data" in dockerfile and "TOKENSTORM_DATA_DIR=/app/data" in dockerfile
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_interpolation_matches_compose():
    assert interpolate("${A:-x}/${B}/${C-y}", {"A": "", "B": "b"}) == "x/b/y"


@pytest.mark.slow
@pytest.mark.parametrize("network", ["namespaces", "loopback"])
def test_headless_profile_runs_as_local_processes(tmp_path, network):
    if network == "namespaces" and not can_use_namespaces():
        pytest.skip("needs root and iproute2 to give each service its own network namespace")
    compose = load_compose()
    services = compose["services"]
    variables = read_env_file(ROOT / ".env.example") | {"USERS": "6", "SPAWN_RATE": "6", "TOTAL_REQUESTS": "40",
                                                         "RUN_NAME": "rig", "MOCK_PROFILE": "deterministic"}
    rig = Rig(tmp_path, variables, namespaces=network == "namespaces")
    hosts = ["mock", "master", "worker1", "worker2", "analysis"]
    try:
        rig.setup_network(hosts)
        rig.start("mock", services["mock"], tmp_path / "mock.log")
        health = services["mock"]["healthcheck"]["test"][1:]
        for _ in range(60):  # the compose healthcheck, run where the service runs
            if rig.run("mock", [a if a != "python" else rig.command({"command": ["python"]})[0] for a in health],
                       services["mock"], timeout=10).returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("mock never became healthy: " + (tmp_path / "mock.log").read_text()[-2000:])
        master = rig.start("master", services["master-headless"], tmp_path / "master.log")
        for host in ("worker1", "worker2"):
            rig.start(host, services["worker"], tmp_path / f"{host}.log")
        assert master.wait(timeout=180) == 0, (tmp_path / "master.log").read_text()[-3000:]
        analysis = rig.run("analysis", rig.command(services["analysis"]), services["analysis"], timeout=120)
        assert analysis.returncode == 0, analysis.stderr[-2000:]
    finally:
        rig.close()
    run_dir = tmp_path / "rig"
    records = load_records(run_dir)
    assert len(records) == 40 and records["worker_id"].nunique() == 2 and (records["status"] == "ok").all()
    meta = json.loads((run_dir / "run-master.json").read_text())
    assert len(meta["workers"]) == 2 and meta["lost"] == {}
    for name in ("report.md", "report.html", "summary.json", "locust_stats.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    if network == "namespaces":  # the mock saw the workers' addresses, not loopback
        assert rig.addresses["mock"] in records["upstream"].iloc[0] or "mock" in records["upstream"].iloc[0]
    log = (tmp_path / "master.log").read_text()
    assert "2 workers connected" in log


def test_kubernetes_manifest_is_consistent():
    import yaml

    docs = [d for d in yaml.safe_load_all((ROOT / "configs" / "k8s" / "tokenstorm.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    services = {name: d for (kind, name), d in kinds.items() if kind == "Service"}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for name, service in services.items():  # every Service selects a pod template
        assert service["spec"]["selector"] in labels, name
    worker = kinds[("Deployment", "tokenstorm-worker")]
    master = kinds[("Job", "tokenstorm-master")]
    replicas = worker["spec"]["replicas"]
    assert f"--expect-workers {replicas}" in master["spec"]["template"]["spec"]["containers"][0]["args"][0]
    command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--master-host") + 1] in services
    for d in workloads:  # the key comes from a Secret, never from the manifest
        for container in d["spec"]["template"]["spec"]["containers"]:
            assert all("OPENAI_API_KEY" not in json.dumps(e) for e in container.get("env", []))
    assert "OPENAI_API_KEY" not in json.dumps(kinds[("ConfigMap", "tokenstorm-config")])

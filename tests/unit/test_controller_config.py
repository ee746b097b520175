"""api.config.load: one validated configuration; every bad variable or flag is named, never a traceback."""

from __future__ import annotations

import pytest

from terrasnap.api.config import SETTINGS, ConfigError, OperatorConfig, load
from terrasnap.controller import run


def test_defaults_without_any_variable() -> None:
    config = load({})
    assert config == OperatorConfig()
    assert config.clusterwide and config.selector is None and config.peering is None
    assert (config.watch_server_timeout, config.watch_client_timeout) == (270, 300.0)
    assert (config.workers, config.worker_limit, config.metrics_port) == (32, 128, 8080)
    assert config.liveness == "http://0.0.0.0:8081/healthz"


def test_every_variable_is_read() -> None:
    env = {
        "TERRASNAP_NAMESPACE": "ops",
        "TERRASNAP_WORKER_IMAGE": "registry.example/worker@sha256:" + "a" * 64,
        "TERRASNAP_IMAGE_PULL_POLICY": "Always",
        "TERRASNAP_WORKER_SERVICE_ACCOUNT": "w",
        "TERRASNAP_GC_SERVICE_ACCOUNT": "g",
        "TERRASNAP_JOB_TTL_SECONDS": "0",
        "TERRASNAP_JOB_DEADLINE_SECONDS": "60",
        "TERRASNAP_JOB_BACKOFF_LIMIT": "0",
        "TERRASNAP_WATCH_SERVER_TIMEOUT": "30",
        "TERRASNAP_WATCH_CLIENT_TIMEOUT": "40.5",
        "TERRASNAP_SELECTOR": "team=geo,!example.com/skip",
        "TERRASNAP_WORKERS": "4",
        "TERRASNAP_WORKER_LIMIT": "16",
        "TERRASNAP_METRICS_PORT": "0",
        "TERRASNAP_METRICS_ADDRESS": "127.0.0.1",
        "TERRASNAP_LIVENESS": "http://127.0.0.1:9/healthz",
        "TERRASNAP_PEERING": "terrasnap",
        "TERRASNAP_PRIORITY": "2",
        "TERRASNAP_TRACEMALLOC": "1",
        "TERRASNAP_ALLOWED_IMAGES": "registry.example/geo/*, registry.example/ml/worker:1.2",
        "TERRASNAP_ALLOW_INSECURE_SOURCES": "yes",
    }
    assert set(env) == {s.variable for s in SETTINGS}
    config = load(env)
    assert config.namespace == "ops" and config.image_pull_policy == "Always"
    assert (config.job_ttl_seconds, config.active_deadline_seconds, config.backoff_limit) == (0, 60, 0)
    assert (config.watch_server_timeout, config.watch_client_timeout) == (30, 40.5)
    assert config.selector == "team=geo,!example.com/skip"
    assert (config.workers, config.worker_limit, config.metrics_port, config.priority) == (4, 16, 0, 2)
    assert config.peering == "terrasnap" and config.trace_memory is True
    assert config.allowed_images == ("registry.example/geo/*", "registry.example/ml/worker:1.2")
    assert config.allow_insecure_sources is True
    assert OperatorConfig.from_env(env) == config


def test_images_are_allowed_by_the_worker_image_or_a_pattern() -> None:
    only_worker = OperatorConfig(worker_image="registry.example/worker:1")
    assert only_worker.image_allowed("registry.example/worker:1")
    assert not only_worker.image_allowed("registry.example/worker:2")
    assert not only_worker.image_allowed("registry.example/worker:1 ")
    config = OperatorConfig(worker_image="w:1", allowed_images=("registry.example/geo/*@sha256:*",))
    assert config.image_allowed("registry.example/geo/worker@sha256:" + "a" * 64)
    assert not config.image_allowed("registry.example/geo/worker:latest")
    assert not config.image_allowed("evil.example/registry.example/geo/x@sha256:1")
    assert OperatorConfig().allow_insecure_sources is False


def test_empty_variables_mean_the_default() -> None:
    assert load({s.variable: "" for s in SETTINGS}) == OperatorConfig()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TERRASNAP_WORKERS", "many", "expected an integer from 1 to 1024"),
        ("TERRASNAP_WORKERS", "0", "expected an integer from 1 to 1024"),
        ("TERRASNAP_WORKER_LIMIT", "-3", "expected an integer ≥ 1"),
        ("TERRASNAP_METRICS_PORT", "70000", "from 0 to 65535"),
        ("TERRASNAP_WATCH_SERVER_TIMEOUT", "4.5", "expected an integer"),
        ("TERRASNAP_WATCH_CLIENT_TIMEOUT", "nan", "positive number of seconds"),
        ("TERRASNAP_WATCH_CLIENT_TIMEOUT", "-1", "positive number of seconds"),
        ("TERRASNAP_JOB_DEADLINE_SECONDS", "0", "≥ 1"),
        ("TERRASNAP_IMAGE_PULL_POLICY", "sometimes", "Always, IfNotPresent, Never"),
        ("TERRASNAP_NAMESPACE", "Ops_Team", "DNS-1123 label"),
        ("TERRASNAP_WORKER_SERVICE_ACCOUNT", "a b", "ServiceAccount name"),
        ("TERRASNAP_ALLOWED_IMAGES", "a:1,,b:2", "comma-separated image patterns"),
        ("TERRASNAP_ALLOW_INSECURE_SOURCES", "maybe", "1/true/yes/on"),
        ("TERRASNAP_WORKER_IMAGE", "worker image:1", "without spaces"),
        ("TERRASNAP_SELECTOR", "team=geo,,x", "bad term ''"),
        ("TERRASNAP_SELECTOR", "team in (a,b)", "label selector"),
        ("TERRASNAP_LIVENESS", "0.0.0.0:8081", "http://HOST:PORT/PATH"),
        ("TERRASNAP_LIVENESS", "http://0.0.0.0/healthz", "http://HOST:PORT/PATH"),
        ("TERRASNAP_PEERING", "Peer!", "KopfPeering name"),
        ("TERRASNAP_TRACEMALLOC", "maybe", "expected 1/true"),
    ],
)
def test_a_bad_variable_is_named_with_what_was_expected(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({variable: value})
    message = str(caught.value)
    assert f"{variable}={value!r}" in message and expected in message


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load({"TERRASNAP_WORKERS": "x", "TERRASNAP_METRICS_PORT": "y", "TERRASNAP_NAMESPACE": "ok"})
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid operator configuration:"
    assert [line.split("=")[0].strip() for line in lines[1:]] == ["TERRASNAP_WORKERS", "TERRASNAP_METRICS_PORT"]


def test_flags_override_variables_and_are_named_when_bad() -> None:
    config = load({"TERRASNAP_METRICS_PORT": "9090", "TERRASNAP_SELECTOR": "a=b"},
                  {"--metrics-port": "0", "--selector": None, "--liveness": ""})  # fmt: skip
    assert config.metrics_port == 0 and config.selector == "a=b" and config.liveness is None
    with pytest.raises(ConfigError, match=r"--metrics-port='http': expected an integer"):
        load({"TERRASNAP_METRICS_PORT": "9090"}, {"--metrics-port": "http"})
    with pytest.raises(ConfigError, match="unknown option"):
        load({}, {"--nope": "1"})


def test_watched_namespaces_come_from_the_command_line() -> None:
    config = load({}, watch_namespaces=("tsop-*", "team-a"))
    assert config.watch_namespaces == ("tsop-*", "team-a") and not config.clusterwide
    with pytest.raises(ConfigError, match="--namespace='a,b'"):
        load({}, watch_namespaces=("a,b",))


def test_the_operator_command_exits_2_with_the_message_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TERRASNAP_WORKERS", "lots")
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert run.main(["--metrics-port", "-1"]) == 2
    err = capsys.readouterr().err
    assert "TERRASNAP_WORKERS='lots'" in err and "--metrics-port='-1'" in err
    assert "Traceback" not in err

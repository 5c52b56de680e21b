"""The container files: no Docker engine runs here, so these check what an operator
relies on in them: a small non-root image whose entry point and arguments the CLI
accepts, a health check on /healthz, a configuration that refuses to serve without
tokens, and a compose file with Redis, the gateway and the SMSC simulator."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ussd_gateway.app.config import ConfigError, load_settings
from ussd_gateway.app.exposure import check_exposure
from ussd_gateway.cli import build_parser

PROJECT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = PROJECT.joinpath("Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def last(name: str) -> str:
    values = [rest for word, rest in instructions() if word == name]
    assert values, f"no {name} in the Dockerfile"
    return values[-1]


class TestDockerfile:
    def test_a_multi_stage_build_on_python_slim(self) -> None:
        bases = [rest for word, rest in instructions() if word == "FROM"]
        assert len(bases) >= 2 and all(base.startswith("python:3.11-slim") for base in bases)
        assert "pip wheel" in " ".join(rest for word, rest in instructions() if word == "RUN")
        assert any(word == "COPY" and rest.startswith("--from=build") for word, rest in instructions())

    def test_the_server_runs_as_a_user_that_is_not_root(self) -> None:
        user = last("USER")
        assert user and user.split(":")[0] not in ("root", "0")
        order = [word for word, _ in instructions()]
        assert order.index("USER") < order.index("ENTRYPOINT")

    def test_the_health_check_asks_healthz(self) -> None:
        check = last("HEALTHCHECK")
        assert "/healthz" in check and "CMD" in check

    def test_the_entry_point_runs(self) -> None:
        """ENTRYPOINT is `ussd-gateway serve`: the same command, from this venv, answers --help."""
        entry = exec_form(last("ENTRYPOINT"))
        assert entry[:2] == ["ussd-gateway", "serve"]
        executable = Path(sys.executable).parent / entry[0]
        result = subprocess.run([str(executable), *entry[1:], "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "--config" in result.stdout

    def test_the_image_arguments_are_accepted_and_need_tokens(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CMD parses as `serve` arguments; the configuration it names binds beyond
        loopback and refuses to start until the tokens are given."""
        entry, arguments = exec_form(last("ENTRYPOINT")), exec_form(last("CMD"))
        args = build_parser().parse_args([*entry[1:], *arguments])
        assert args.command == "serve" and args.config == "/etc/ussd-gateway/config.toml"
        copies = [shlex.split(rest) for word, rest in instructions() if word == "COPY"]
        source = next(src for src, dst in (c[-2:] for c in copies) if dst == args.config)
        settings = load_settings(PROJECT / source, environ={})
        assert settings.http.host == "0.0.0.0" and settings.admin.port
        with pytest.raises(ConfigError, match="tokens"):
            check_exposure(settings)
        with pytest.raises(ConfigError, match=r"set \[admin\] token"):
            check_exposure(load_settings(PROJECT / source, environ={"USSD_HTTP_TOKENS": "t1"}))
        check_exposure(load_settings(PROJECT / source, environ={"USSD_HTTP_TOKENS": "t1", "USSD_ADMIN_TOKEN": "a1"}))

    def test_the_build_context_leaves_out_the_venv_and_tests(self) -> None:
        ignored = PROJECT.joinpath(".dockerignore").read_text(encoding="utf-8").split()
        assert ".venv" in ignored and "tests" in ignored and ".git" in ignored


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(PROJECT.joinpath("compose.yaml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


class TestCompose:
    def test_redis_gateway_and_the_smsc_simulator_with_health_checks(self, compose: dict) -> None:  # type: ignore[type-arg]
        services = compose["services"]
        assert set(services) == {"redis", "gateway", "smsc"}
        for name, service in services.items():
            assert service["healthcheck"]["test"][0] == "CMD", name
        assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])
        assert services["gateway"]["depends_on"] == {
            "redis": {"condition": "service_healthy"}, "smsc": {"condition": "service_healthy"}
        }

    def test_the_gateway_gets_its_tokens_and_redis_from_the_environment(self, compose: dict) -> None:  # type: ignore[type-arg]
        gateway = compose["services"]["gateway"]
        environment = gateway["environment"]
        assert environment["USSD_SESSIONS_REDIS_URL"] == "redis://redis:6379/0"
        assert ":?" in environment["USSD_HTTP_TOKENS"] and ":?" in environment["USSD_ADMIN_TOKEN"]  # required
        assert "127.0.0.1:8081:8081" in gateway["ports"]  # the admin port stays on the host

    def test_the_gateway_configuration_binds_to_the_simulator(self, compose: dict) -> None:  # type: ignore[type-arg]
        gateway, smsc = compose["services"]["gateway"], compose["services"]["smsc"]
        mounted = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
        config = gateway["command"][gateway["command"].index("--config") + 1]
        settings = load_settings(PROJECT / mounted[config], environ={"USSD_HTTP_TOKENS": "t", "USSD_ADMIN_TOKEN": "a"})
        check_exposure(settings)
        (bind,) = settings.smpp.binds
        assert bind.host == "smsc" and str(bind.port) in smsc["command"]
        args = build_parser().parse_args([*smsc["entrypoint"][1:], *smsc["command"]])
        assert args.command == "smsc" and args.host == "0.0.0.0" and args.port == bind.port
        assert args.system_id == bind.system_id and args.password == bind.password
        serve = build_parser().parse_args(["serve", *gateway["command"]])
        assert serve.config == config

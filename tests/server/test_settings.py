"""The [server] table: parsed and validated with sovra.toml, overridden by SOVRA_SERVER_*
variables, the OIDC client secret only by reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.config import ConfigError, load_config
from sovra.server.settings import ServerSettings


def write(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "sovra.toml"
    path.write_text('[workspace]\nhome = "data"\n\n[server]\n' + server, encoding="utf-8")
    return path


def test_server_table_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        write(tmp_path, 'port = 9000\nhost = "0.0.0.0"\noidc_issuer = "https://id.example"\n')
    )
    assert config.server.port == 9000
    settings = ServerSettings.from_config(config)
    assert (settings.port, settings.host, settings.oidc_enabled) == (9000, "0.0.0.0", True)
    assert not settings.oidc_login_enabled  # no client id: bearer tokens only
    monkeypatch.setenv("SOVRA_SERVER_PORT", "9100")
    monkeypatch.setenv("SOVRA_SERVER_OIDC_CLIENT_ID", "sovra-web")
    settings = ServerSettings.from_config(config)
    assert (settings.port, settings.host, settings.oidc_login_enabled) == (9100, "0.0.0.0", True)
    assert ServerSettings.from_config(config, port=9200).port == 9200


def test_bad_server_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.oidc_algorithms.*HS256.*asymmetric"):
        load_config(write(tmp_path, 'oidc_algorithms = ["RS256", "HS256"]\n'))
    with pytest.raises(ConfigError, match=r"server\.client_secret: unknown field"):
        load_config(write(tmp_path, 'client_secret = "s3cret"\n'))
    with pytest.raises(ConfigError, match="not both"):
        load_config(
            write(tmp_path, 'oidc_client_secret_env = "X"\noidc_client_secret_file = "s.txt"\n')
        )


def test_client_secret_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings().oidc_client_secret() is None  # public client: PKCE only
    settings = ServerSettings(oidc_client_secret_env="SOVRA_TEST_OIDC_SECRET")
    with pytest.raises(ConfigError, match=r"\$SOVRA_TEST_OIDC_SECRET, which is not set"):
        settings.oidc_client_secret()
    monkeypatch.setenv("SOVRA_TEST_OIDC_SECRET", "from-env")
    assert settings.oidc_client_secret() == "from-env"
    assert "from-env" not in repr(settings)
    secret = tmp_path / "secret.txt"
    with pytest.raises(ConfigError, match="readable file"):
        ServerSettings(oidc_client_secret_file=secret).oidc_client_secret()
    secret.write_text("from-file\n", encoding="utf-8")
    assert ServerSettings(oidc_client_secret_file=secret).oidc_client_secret() == "from-file"


def test_relative_secret_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("s3cret", encoding="utf-8")
    config = load_config(write(tmp_path, 'oidc_client_secret_file = "secret.txt"\n'))
    assert ServerSettings.from_config(config).oidc_client_secret() == "s3cret"

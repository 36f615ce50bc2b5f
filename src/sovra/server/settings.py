"""Server settings: the `[server]` table of sovra.toml, overridden by `SOVRA_SERVER_*` variables.

The fields are defined once, in `sovra.config.ServerConfig`; `ServerSettings` adds the
environment layer and what the server derives from them (whether OIDC is on, the client secret
read from its reference at use time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from sovra.config import SERVER_TOKEN_ALGORITHMS, Config, ConfigError, ServerConfig

ASYMMETRIC_ALGORITHMS = SERVER_TOKEN_ALGORITHMS
ENV_PREFIX = "SOVRA_SERVER_"


class ServerSettings(BaseSettings, ServerConfig):
    """`ServerConfig` + `SOVRA_SERVER_<FIELD>` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> ServerSettings:
        """`[server]` from sovra.toml, then the environment on top, then `overrides` (command
        line flags) on top of both. A relative secret file is relative to the config file."""
        from_env = cls()
        values = {
            **config.server.model_dump(),
            **from_env.model_dump(include=from_env.model_fields_set),
            **overrides,
        }
        secret_file = values.get("oidc_client_secret_file")
        if isinstance(secret_file, Path):
            values["oidc_client_secret_file"] = config.resolve(secret_file)
        return cls(**values)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    @property
    def oidc_login_enabled(self) -> bool:
        """Browser login through the identity provider (authorization code + PKCE)."""
        return bool(self.oidc_issuer and self.oidc_client_id)

    def oidc_client_secret(self) -> str | None:
        """The client secret from its reference, or None for a public (PKCE-only) client."""
        if self.oidc_client_secret_env:
            value = os.environ.get(self.oidc_client_secret_env, "")
            if not value:
                raise ConfigError(
                    f"server.oidc_client_secret_env names ${self.oidc_client_secret_env}, which "
                    "is not set; export it or use oidc_client_secret_file"
                )
            return value
        if self.oidc_client_secret_file:
            try:
                value = self.oidc_client_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"server.oidc_client_secret_file {self.oidc_client_secret_file}: "
                    f"{exc.strerror}; point it at a readable file holding the secret"
                ) from None
            if not value:
                raise ConfigError(
                    f"server.oidc_client_secret_file {self.oidc_client_secret_file} is empty"
                )
            return value
        return None

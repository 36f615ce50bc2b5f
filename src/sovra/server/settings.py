"""Server settings (`SOVRA_SERVER_*` environment variables) until sovra.toml gains a [server] table.

Every field has a safe default: loopback only, no identity provider (local users and API keys),
secure cookies on, modest rate and size limits.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class ServerSettings(BaseSettings):
    """What `sovra serve` needs beyond sovra.toml; read from `SOVRA_SERVER_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="SOVRA_SERVER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=0, le=65535)
    public_url: str = ""
    """External base URL (used for links); empty = derived from the request."""

    oidc_issuer: str = ""
    """Empty = no identity provider: local users and API keys only."""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    """Empty = `<issuer>/.well-known/openid-configuration` → `jwks_uri`."""
    oidc_user_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    oidc_algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    oidc_leeway_s: int = Field(default=30, ge=0, le=300)
    jwks_cache_s: int = Field(default=300, ge=10)
    jwks_min_refresh_s: float = Field(default=10.0, ge=0)
    """A token with an unknown `kid` refetches the JWKS at most this often."""

    session_ttl_s: int = Field(default=8 * 3600, ge=60)
    secure_cookies: bool = True
    """Set the cookie `Secure` flag; turn off only for plain-http loopback demos."""

    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=60, ge=1)
    login_attempts_per_minute: int = Field(default=10, ge=1)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    metrics_token: str = ""
    """Empty = /metrics open (the default bind is loopback); else scrapers send it as a bearer."""

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"oidc_algorithms {bad or list(value)} not allowed; use asymmetric ones from "
                + ", ".join(ASYMMETRIC_ALGORITHMS)
            )
        return value

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

"""Bearer tokens that are JWTs (OIDC access tokens), verified by PyJWT (contract, "Tenants and
principals").

A token is checked against one key source: a JWKS URL (fetched, cached, fetched again for a
rotated key), a PEM public key, or an HS256 secret. Only the algorithms of that key are
accepted, so `alg: none` and an RS/HS confusion (an RSA public key used as an HMAC secret) are
refused before any signature is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import anyio.to_thread
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.engine.principal import DEFAULT_TENANT, Principal, is_tenant_name
from app.settings import Settings

# Clocks of the issuer and of this service may differ this much.
LEEWAY_SECONDS = 60
# HS256 with a shorter secret can be guessed offline from one token (RFC 7518, 3.2).
MIN_SECRET_BYTES = 32

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_SYMMETRIC = {"HS256", "HS384", "HS512"}


class InvalidAuthSettings(ValueError):
    """Keys or JWT settings that cannot be used: the service does not start."""


class InvalidJwtSettings(InvalidAuthSettings):
    """The JWT settings cannot be used."""


class InvalidToken(Exception):
    """The token is not one this service accepts: 401, saying why (never the token)."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched: 503, the token may well be good."""


def _pem_algorithms(pem: str) -> tuple[Any, list[str]]:
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise InvalidJwtSettings("JWT_PUBLIC_KEY: not a PEM public key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return key, list(_RSA)
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_BY_CURVE:
        return key, [_EC_BY_CURVE[key.curve.name]]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ["EdDSA"]
    raise InvalidJwtSettings("JWT_PUBLIC_KEY: an RSA, EC (P-256/384/521) or Ed25519 key is needed")


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """`a.b` reads `{"a": {"b": ...}}`; a claim named with the dot itself is found first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class TokenVerifier:
    """Turns a verified JWT into a principal, per the settings."""

    def __init__(self, settings: Settings) -> None:
        sources = [
            name
            for name, value in (
                ("JWT_JWKS_URL", settings.jwt_jwks_url),
                ("JWT_PUBLIC_KEY", settings.jwt_public_key),
                ("JWT_SECRET", settings.jwt_secret),
            )
            if value
        ]
        if len(sources) > 1:
            raise InvalidJwtSettings(f"{' and '.join(sources)}: set one of them, not several")
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.tenant_claim = settings.jwt_tenant_claim
        self.roles_claim = settings.jwt_roles_claim
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        self._algorithms: list[str] = []
        if settings.jwt_jwks_url:
            try:
                self._jwks = jwt.PyJWKClient(
                    settings.jwt_jwks_url,
                    lifespan=settings.jwt_jwks_cache_seconds,
                    cooldown_duration=settings.jwt_jwks_refresh_seconds,
                    timeout=settings.jwt_jwks_timeout_seconds,
                )
            except jwt.PyJWKClientError as exc:
                raise InvalidJwtSettings(f"JWT_JWKS_URL: {exc}") from exc
        elif settings.jwt_public_key is not None:
            self._key, self._algorithms = _pem_algorithms(
                settings.jwt_public_key.get_secret_value()
            )
        elif settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
            if len(secret) < MIN_SECRET_BYTES:
                raise InvalidJwtSettings(
                    f"JWT_SECRET: at least {MIN_SECRET_BYTES} bytes, or a token's signature "
                    "can be guessed from the token"
                )
            self._key, self._algorithms = secret, ["HS256"]
        self.configured = bool(sources)

    async def principal(self, token: str) -> Principal:
        """The principal the token names, once its signature and claims are verified."""
        key, algorithms = await self._signing_key(token)
        options: dict[str, Any] = {
            "require": ["exp", "sub"],
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("The token is not valid yet (nbf).") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("The token's issuer is not the one this service trusts.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The token is not meant for this service (aud).") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise InvalidToken("The token's algorithm is not the key's.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token has no {exc.claim!r} claim.") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The token's signature or form is not valid.") from exc
        return self._principal_of(claims)

    async def _signing_key(self, token: str) -> tuple[Any, list[str]]:
        if self._jwks is None:
            return self._key, self._algorithms
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The bearer is neither an API key nor a JWT.") from exc
        if not isinstance(header.get("kid"), str):
            raise InvalidToken("The token names no signing key (kid).")
        try:
            # PyJWKClient fetches with urllib, which blocks: a thread keeps the loop serving.
            found = await anyio.to_thread.run_sync(self._jwks.get_signing_key, header["kid"])
        except jwt.PyJWKClientConnectionError as exc:
            raise KeysUnavailable("The signing keys (JWT_JWKS_URL) cannot be fetched now.") from exc
        except (jwt.PyJWKClientError, jwt.InvalidKeyError) as exc:
            raise InvalidToken("The token's signing key (kid) is not in the JWKS.") from exc
        if found.algorithm_name in _SYMMETRIC:
            # A published key set is public: a shared secret in it signs nothing.
            raise InvalidToken("The JWKS key the token names is not a public key.")
        return found.key, [found.algorithm_name]

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidToken("The token's 'sub' claim is not a name.")
        tenant = _claim(claims, self.tenant_claim)
        if tenant is None:
            tenant = DEFAULT_TENANT
        elif not isinstance(tenant, str) or not is_tenant_name(tenant):
            raise InvalidToken(
                f"The token's {self.tenant_claim!r} claim is not a tenant name "
                "(letters, digits, '-' and '_')."
            )
        roles = _claim(claims, self.roles_claim)
        if isinstance(roles, str):
            roles = roles.split()  # an OAuth scope-style string
        named = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
        return Principal(subject, tenant, frozenset(named), MappingProxyType(claims))

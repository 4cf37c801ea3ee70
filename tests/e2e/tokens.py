"""Service-account tokens, checked as a token reviewer checks them: an RS256 JWT whose
signature verifies with the cluster's public key (`sa.pub`), and its claims."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(token: str, public_key_pem: bytes) -> dict[str, Any]:
    """The token's claims if its RS256 signature verifies with the key; raises
    cryptography.exceptions.InvalidSignature if it does not, ValueError if it is no RS256 JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a JWT has three parts, this one {len(parts)}")
    header = json.loads(_b64url_decode(parts[0]))
    if header.get("alg") != "RS256":
        raise ValueError(f"not signed with RS256: {header}")
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"not an RSA public key: {type(key).__name__}")
    signed = f"{parts[0]}.{parts[1]}".encode()
    key.verify(_b64url_decode(parts[2]), signed, padding.PKCS1v15(), hashes.SHA256())
    claims: dict[str, Any] = json.loads(_b64url_decode(parts[1]))
    return claims

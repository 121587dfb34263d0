"""RSA signing keys for ID tokens, published as a JWKS; rotation keeps the old key published."""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    cert_der: bytes

    def jwk(self, issuer: str) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
            "x5c": [base64.b64encode(self.cert_der).decode()],
            "issuer": issuer,
        }


def new_key() -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.emulator.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(private_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    # Microsoft's kid is the certificate's x5t (base64url SHA-1 thumbprint).
    kid = b64url(hashlib.sha1(der).digest())
    return SigningKey(kid, private_key, der)


class KeyRing:
    def __init__(self) -> None:
        self.keys: list[SigningKey] = [new_key()]

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, keep_old: bool = True) -> SigningKey:
        key = new_key()
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def jwks(self, issuer: str) -> dict[str, Any]:
        return {"keys": [k.jwk(issuer) for k in reversed(self.keys)]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current
        return jwt.encode(
            claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "x5t": key.kid}
        )

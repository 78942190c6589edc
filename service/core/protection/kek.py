"""The key-encryption key (KEK): wraps and unwraps the data keys, never touches a row.

Two sources: ``PARTICIPANTS_KEK`` (32 random bytes, base64) or AWS KMS (``PARTICIPANTS_KMS_KEY_ID``,
credentials and region the usual AWS way). Each wrapped key records the KEK that wrapped it
(``kek_id``): a process given another KEK refuses to start and says which one the keys need,
instead of failing on the first row it reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.settings import Settings

NONCE = 12


class KeySourceError(Exception):
    """No usable key-encryption key: the message says what to set (never a key)."""


class Kek(Protocol):
    kek_id: str

    async def wrap(self, key: bytes, purpose: str) -> bytes: ...

    async def unwrap(self, wrapped: bytes, purpose: str) -> bytes: ...


class LocalKek:
    """A KEK held in the process's settings. The wrapped key is nonce || AES-GCM(key), its AAD the
    key's purpose, so a wrapped index key cannot be passed off as a field key."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(secret)
        # Names the KEK without revealing it: an HMAC of a fixed label under the KEK itself.
        self.kek_id = "local:" + hmac.digest(secret, b"participants kek id", "sha256")[:8].hex()

    @classmethod
    def from_base64(cls, text: str) -> LocalKek:
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeySourceError(
                "PARTICIPANTS_KEK is not base64 (make one: openssl rand -base64 32)"
            ) from None
        if len(secret) != 32:
            raise KeySourceError(f"PARTICIPANTS_KEK must be 32 bytes once decoded, not {len(secret)}")
        return cls(secret)

    async def wrap(self, key: bytes, purpose: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, key, purpose.encode())

    async def unwrap(self, wrapped: bytes, purpose: str) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], purpose.encode())


class KmsKek:
    """A KEK that never leaves AWS KMS: data keys are wrapped by its Encrypt and unwrapped by its
    Decrypt, with the purpose as encryption context. boto3 is synchronous; it runs in a thread,
    and only when keys are loaded or rotated, never per row."""

    def __init__(self, key_id: str, region: str | None, endpoint: str | None) -> None:
        import boto3  # type: ignore[import-untyped]  # only a deployment that uses KMS needs it loaded

        self.kek_id = "kms:" + key_id
        self._key_id = key_id
        self._client: Any = boto3.client("kms", region_name=region, endpoint_url=endpoint)

    async def wrap(self, key: bytes, purpose: str) -> bytes:
        answer = await asyncio.to_thread(
            self._client.encrypt, KeyId=self._key_id, Plaintext=key, EncryptionContext={"purpose": purpose}
        )
        return bytes(answer["CiphertextBlob"])

    async def unwrap(self, wrapped: bytes, purpose: str) -> bytes:
        answer = await asyncio.to_thread(
            self._client.decrypt,
            KeyId=self._key_id,
            CiphertextBlob=wrapped,
            EncryptionContext={"purpose": purpose},
        )
        return bytes(answer["Plaintext"])


def kek_from_settings(settings: Settings) -> Kek:
    """The configured KEK; ``KeySourceError`` when none or both are set."""
    if settings.kek and settings.kms_key_id:
        raise KeySourceError("set PARTICIPANTS_KEK or PARTICIPANTS_KMS_KEY_ID, not both")
    if settings.kek:
        return LocalKek.from_base64(settings.kek)
    if settings.kms_key_id:
        return KmsKek(settings.kms_key_id, settings.kms_region, settings.kms_endpoint)
    raise KeySourceError(
        "no key-encryption key: set PARTICIPANTS_KEK (32 random bytes, base64: openssl rand -base64 32)"
        " or PARTICIPANTS_KMS_KEY_ID (AWS KMS)"
    )


def new_local_kek_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def fingerprint(key: bytes) -> str:
    """A short, non-secret name for a data key in logs and the CLI's output."""
    return hashlib.sha256(b"participants data key id" + key).hexdigest()[:12]

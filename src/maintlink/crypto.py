"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation.

`MAINTLINK_SECRET_KEY` holds one or more keys, comma-separated, newest first. The newest
encrypts; every key decrypts, so a key can be added before old ciphertexts are
re-encrypted with `maintlink admin rotate-secret-key`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE_NAME = "secret.key"


class SecretKeyError(RuntimeError):
    """No usable master key."""


class Cipher:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured")
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                "MAINTLINK_SECRET_KEY must be comma-separated Fernet keys "
                "(32 url-safe base64-encoded bytes each); "
                "create one with `maintlink admin generate-secret-key`"
            ) from exc
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, plaintext: bytes) -> str:
        return self._multi.encrypt(plaintext).decode()

    def decrypt(self, ciphertext: str) -> bytes:
        try:
            return self._multi.decrypt(ciphertext.encode())
        except InvalidToken as exc:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with the configured keys"
            ) from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt with the newest key (no-op in meaning, new bytes)."""
        return self._multi.rotate(ciphertext.encode()).decode()

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt_json(self, ciphertext: str) -> Any:
        return json.loads(self.decrypt(ciphertext))


def generate_key() -> str:
    return Fernet.generate_key().decode()


def load_cipher(secret_key: str | None, data_dir: Path, *, may_generate: bool) -> Cipher:
    """The configured keys, else the data directory's key file (created when allowed)."""
    if secret_key:
        return Cipher([k for k in secret_key.split(",") if k.strip()])
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return Cipher([k for k in path.read_text().split(",") if k.strip()])
    if not may_generate:
        raise SecretKeyError(
            "MAINTLINK_SECRET_KEY is required in production; "
            "create one with `maintlink admin generate-secret-key`"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    # Owner-only from the first byte: the key must never be world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return Cipher([key])

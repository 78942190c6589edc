"""Personal data at rest: the key-encryption key (a local key or AWS KMS), the data keys it wraps
(kept in Postgres), AES-256-GCM field ciphertexts bound to their participant and field, and the
blind indexes (HMAC-SHA256) that look values up without decrypting. docs/data-protection.md."""

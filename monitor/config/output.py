"""The configuration written out: masked in the file's layout, a short id of it, and its JSON Schema."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from monitor.config.model import Config


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data in the file's layout, every secret replaced by ``***``."""
    return config.model_dump(mode="json", context={"mask": True})


def config_hash(config: Config) -> str:
    """A short id of the effective configuration (the file's path aside), stable across restarts.

    Secrets enter only through scrypt, a deliberately slow digest: the id is published as a metric label,
    and a fast hash of a short token could be reversed by trying every candidate.
    """
    unmasked = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    secret_digest = hashlib.scrypt(
        unmasked, salt=b"foundry-monitor config_hash v2", n=1 << 14, r=8, p=1, dklen=32
    )
    body = json.dumps(masked(config), sort_keys=True).encode()
    return hashlib.sha256(body + b"\0" + secret_digest).hexdigest()[:16]


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file, for editors (yaml-language-server) and CI checks."""
    schema = Config.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "foundry-monitor configuration",
        **schema,
    }

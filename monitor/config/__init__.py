"""The configuration: one YAML file read into one frozen ``Config``; its masked view, hash and JSON Schema."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from monitor.config.fields import normalize_base_url as normalize_base_url
from monitor.config.loading import ConfigError as ConfigError
from monitor.config.loading import load_config as load_config
from monitor.config.loading import parse_config as parse_config
from monitor.config.model import AlertmanagerConfig as AlertmanagerConfig
from monitor.config.model import BreakerConfig as BreakerConfig
from monitor.config.model import Config as Config
from monitor.config.model import DiscoverConfig as DiscoverConfig
from monitor.config.model import FoundryConfig as FoundryConfig
from monitor.config.model import PollingConfig as PollingConfig
from monitor.config.model import RetryConfig as RetryConfig
from monitor.config.model import TimeoutsConfig as TimeoutsConfig
from monitor.config.model import WebhookConfig as WebhookConfig


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data in the file's layout, every secret replaced by ``***``."""
    return config.model_dump(mode="json", context={"mask": True})


def config_hash(config: Config) -> str:
    """A short id of the effective configuration (the file's path aside), stable across restarts.

    Secrets enter only through scrypt, a deliberately slow digest: the id is published as a metric label,
    and a fast hash of a short token could be reversed by trying every candidate.
    """
    unmasked = json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
    secrets = hashlib.scrypt(unmasked, salt=b"foundry-monitor config_hash v2", n=1 << 14, r=8, p=1, dklen=32)
    digest = hashlib.sha256(json.dumps(masked(config), sort_keys=True).encode() + b"\0" + secrets)
    return digest.hexdigest()[:16]


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file, for editors (yaml-language-server) and CI checks."""
    return Config.model_json_schema()

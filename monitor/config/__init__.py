"""The configuration: one YAML file, read and validated once into one frozen ``Config`` model.

``fields`` holds the field types (how a value is read, bounded, masked), ``model`` the sections,
``loading`` the YAML file and its problems by key path, ``output`` the masked view, hash and JSON Schema.
"""

from __future__ import annotations

from monitor.config.fields import (
    MASK,
    MAX_DURATION,
    RESERVED_LABELS,
    Secret,
    format_duration,
    normalize_base_url,
    parse_duration,
)
from monitor.config.loading import ConfigError, load_config, parse_config
from monitor.config.model import (
    AlertmanagerConfig,
    AuthConfig,
    BreakerConfig,
    Config,
    DeploymentConfig,
    DiscoverConfig,
    FoundryConfig,
    LoggingConfig,
    PollingConfig,
    RetryConfig,
    ServerConfig,
    SinksConfig,
    StateConfig,
    TimeoutsConfig,
    TlsConfig,
    WebhookConfig,
    secret_fields,
)
from monitor.config.output import config_hash, config_schema, masked

__all__ = [
    "MASK",
    "MAX_DURATION",
    "RESERVED_LABELS",
    "AlertmanagerConfig",
    "AuthConfig",
    "BreakerConfig",
    "Config",
    "ConfigError",
    "DeploymentConfig",
    "DiscoverConfig",
    "FoundryConfig",
    "LoggingConfig",
    "PollingConfig",
    "RetryConfig",
    "Secret",
    "ServerConfig",
    "SinksConfig",
    "StateConfig",
    "TimeoutsConfig",
    "TlsConfig",
    "WebhookConfig",
    "config_hash",
    "config_schema",
    "format_duration",
    "load_config",
    "masked",
    "normalize_base_url",
    "parse_config",
    "parse_duration",
    "secret_fields",
]

"""Typed configuration: declarations in `settings`, loading in `load`."""

from unbroken.config.load import ConfigError, load_config
from unbroken.config.settings import Config

__all__ = ["Config", "ConfigError", "load_config"]

"""Where qcompile's data lives: target presets and shipped tuning records inside the installed package (read-only),
the user's own tuning records in a per-user cache folder."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path


def presets() -> Path:
    """The folder of target presets (`targets/` in the source tree, package data once installed)."""
    return Path(str(importlib.resources.files("qcompile._presets")))


def shipped_records() -> Path:
    """The tuning records shipped with qcompile (`tuning_logs/` in the source tree, package data once installed):
    read, never written."""
    return Path(str(importlib.resources.files("qcompile._records")))


def cache() -> Path:
    """The user's qcompile cache folder: $QCOMPILE_CACHE, else the platform's (~/.cache/qcompile on Linux)."""
    from platformdirs import user_cache_path

    override = os.environ.get("QCOMPILE_CACHE")
    return Path(override) if override else user_cache_path("qcompile")


def user_records() -> Path:
    """Where `qcompile tune` writes records by default and `build` looks first: $QCOMPILE_RECORDS, else
    `tuning_logs/` in the cache folder."""
    override = os.environ.get("QCOMPILE_RECORDS")
    return Path(override) if override else cache() / "tuning_logs"

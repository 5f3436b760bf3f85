"""Errors of the store API. Each message is one sentence naming the problem and the fix.

Bad input (a filter, a time, a label, a mute window) raises :class:`sentinel.config.ConfigError`
(the incident rules raise its subclass ``ActionError``); these two are about the store itself.
"""
from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot do this: unreachable, missing tables, or read-only (S3) for operator actions."""


class NotFound(StoreError):
    """The incident, sensor or zone named does not exist in the store."""

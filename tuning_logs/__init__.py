"""Tuning records shipped with qcompile, installed as the package data qcompile._records (read-only)."""

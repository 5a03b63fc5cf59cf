"""Target presets, installed as the package data qcompile._presets."""

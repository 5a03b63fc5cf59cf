"""qcompile's Relax passes, one per module; `pipeline.py` lists them in order."""

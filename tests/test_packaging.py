"""`pip wheel .` gives a wheel that works outside the checkout: presets and shipped records inside the package."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel (pip fetches the build backend) and a virtual environment

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_finds_its_data_outside_the_checkout(tmp_path):
    # built from a copy: setuptools leaves build/ and *.egg-info in the folder it builds
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("qcompile-*.whl")
    # the dependencies (TVM, onnx...) come from this environment; qcompile itself only from the wheel
    venv.create(tmp_path / "env", system_site_packages=True, with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", wheel],
                   check=True, capture_output=True, env=env)
    out = subprocess.run([tmp_path / "env" / "bin" / "qcompile", "targets"], cwd=tmp_path, check=True,
                         capture_output=True, text=True, env=env).stdout
    assert "| rpi5 " in out and "| x86 " in out
    where = subprocess.run(
        [python, "-c", "import qcompile, qcompile.paths as p; print(qcompile.__file__); print(p.presets()); "
                       "print(len(list(p.shipped_records().glob('*/*/*/database_tuning_record.json'))))"],
        cwd=tmp_path, check=True, capture_output=True, text=True, env=env).stdout.split("\n")
    site = str(tmp_path / "env")
    assert where[0].startswith(site) and where[1].startswith(site)
    assert int(where[2]) == len(list((REPO / "tuning_logs").glob("*/*/*/database_tuning_record.json"))) > 0

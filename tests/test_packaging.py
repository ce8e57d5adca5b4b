"""One import namespace: the project installs the single top-level package ``compressor``.

RepDistiller, YOLOv5 and many research repositories keep a ``models/`` package at their root;
run from such a folder, a generic top-level ``models`` or ``deploy`` would be shadowed.
"""

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"compressor": ROOT / "compressor", "compressor.models": ROOT / "models", "compressor.deploy": ROOT / "deploy"}


def _package_folders() -> set[str]:
    names = set()
    for prefix, folder in MAPPED.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            names.add(".".join((prefix, *rel)))
    return names


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_folders()
    assert config["package-dir"] == {"compressor.models": "models", "compressor.deploy": "deploy"}


def test_wheel_has_one_top_level_package(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (needed to build the wheel without network)")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"compressor"}
    assert "compressor/models/zoo.py" in names and "compressor/deploy/export/int8.py" in names
    assert "compressor/pipeline/demo.yaml" in names and "compressor/pipeline/recipes/pursuhint-table4.yaml" in names


@pytest.fixture
def foreign_repo(tmp_path):
    """A research repository's root: its own models/ and deploy/ packages, as RepDistiller has."""
    for name in ("models", "deploy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the foreign package was imported')\n")
    return tmp_path


def test_cli_runs_from_a_folder_with_foreign_packages(foreign_repo):
    out = subprocess.run(
        [sys.executable, "-m", "compressor", "inspect", "resnet8", "--json"], cwd=foreign_repo, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["arch"] == "resnet8"


def test_api_runs_from_a_folder_with_foreign_packages(foreign_repo):
    code = (
        "import torch\n"
        "from compressor.checkpoint import load_checkpoint\n"
        "from compressor.models import create_model\n"
        "from compressor.deploy.export import export_artifact\n"
        "torch.save(create_model('resnet8').state_dict(), 'r8.pth')\n"
        "print(load_checkpoint('r8.pth').arch)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=foreign_repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "resnet8"

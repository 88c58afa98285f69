"""
flake8 with ament's configuration (ament_flake8) over the package's own Python files.

The usual `ros2 pkg create` test, except that it names the paths to check: linting `.` would also
walk the repository's build/, install/, log/ and third_party/ directories.
"""

from pathlib import Path

from ament_flake8.main import main_with_errors
import pytest

REPO = Path(__file__).resolve().parents[1]
# Everything written for this package; generated and vendored directories stay out.
LINTED_PATHS = ('segtrack_ros', 'test', 'launch', 'tools', 'setup.py')


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    monkeypatch.chdir(REPO)  # ament_flake8 looks for AMENT_IGNORE markers under the cwd
    rc, errors = main_with_errors(argv=[path for path in LINTED_PATHS if (REPO / path).exists()])
    assert rc == 0, \
        'Found %d code style errors / warnings:\n' % len(errors) + \
        '\n'.join(errors)

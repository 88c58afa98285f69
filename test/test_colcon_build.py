"""
`colcon build` of this package in a temporary workspace installs what ROS tools look for.

`ros2 run` finds executables in <prefix>/lib/segtrack_ros, `ros2 launch` the launch files in
<prefix>/share/segtrack_ros/launch, and both find the package through the ament index marker.
The build runs the colcon of the interpreter that runs the tests (the .venv one on the pip
route): colcon's ament_python build calls `setup.py` with that interpreter. It crawls only this
repository (`--base-paths`; the root is the package, so colcon does not descend into
third_party/, build/ or .venv/) and writes its build, install and log directories to a
temporary directory, never into the checkout.
"""

import os
from pathlib import Path
import subprocess
import sys
import textwrap
import time

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'segtrack_ros'
# Launch files the package promises (see API.md); more under launch/ are checked too.
EXPECTED_LAUNCH_FILES = ('segtrack.launch.py', 'demo.launch.py')
EXPECTED_CONFIG_FILES = ('segtrack.yaml', 'fastdds_large_data.xml', 'segtrack.rviz')
CONSOLE_SCRIPTS = ('segtrack_node', 'video_publisher', 'segtrack-video')
BUILD_SECONDS = 60  # the build takes about 2 s here


def source_files(directory, pattern):
    """Return the names of the files in REPO/`directory` that match `pattern`."""
    return {path.name for path in (REPO / directory).glob(pattern) if path.is_file()}


@pytest.fixture(scope='module')
def build(tmp_path_factory):
    """
    Build the package with colcon in a fresh workspace; return (install prefix, seconds).

    The prefix is the isolated install of the package: <workspace>/install/segtrack_ros.
    """
    pytest.importorskip('colcon_core', reason='colcon is not installed for this interpreter')
    workspace = tmp_path_factory.mktemp('colcon_ws')
    env = dict(os.environ, COLCON_HOME=str(workspace / 'colcon_home'))  # no user defaults
    env.pop('COLCON_DEFAULTS_FILE', None)
    command = [
        sys.executable, '-m', 'colcon', '--log-base', str(workspace / 'log'), 'build',
        '--base-paths', str(REPO), '--packages-select', PACKAGE,
        '--build-base', str(workspace / 'build'), '--install-base', str(workspace / 'install'),
        '--event-handlers', 'console_direct-', 'console_cohesion+',
    ]
    start = time.monotonic()
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=5 * BUILD_SECONDS)
    seconds = time.monotonic() - start
    assert result.returncode == 0, f'colcon build failed:\n{result.stdout}\n{result.stderr}'
    assert 'Summary: 1 package finished' in result.stdout, result.stdout
    return workspace / 'install' / PACKAGE, seconds


@pytest.fixture(scope='module')
def prefix(build):
    """Return the install prefix of the package."""
    return build[0]


@pytest.fixture(scope='module')
def share(prefix):
    """Return <prefix>/share/segtrack_ros."""
    return prefix / 'share' / PACKAGE


def test_build_is_fast(build):
    assert build[1] < BUILD_SECONDS, f'colcon build took {build[1]:.1f} s'


def test_launch_files_installed(share):
    names = source_files('launch', '*.launch.py') | set(EXPECTED_LAUNCH_FILES)
    for name in sorted(names):
        installed = share / 'launch' / name
        assert installed.is_file(), f'{name} is not installed (is it in launch/?)'
        assert installed.read_bytes() == (REPO / 'launch' / name).read_bytes(), name


def test_config_installed(share):
    names = source_files('config', '*') | set(EXPECTED_CONFIG_FILES)
    for name in sorted(names):
        installed = share / 'config' / name
        assert installed.is_file(), f'{name} is not installed (is it in config/?)'
        assert installed.read_bytes() == (REPO / 'config' / name).read_bytes(), name


def test_package_xml_installed(share):
    assert (share / 'package.xml').read_bytes() == (REPO / 'package.xml').read_bytes()


def test_ament_index_marker_installed(prefix):
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file()


def test_console_scripts_installed_where_ros2_run_looks(prefix):
    for name in CONSOLE_SCRIPTS:
        script = prefix / 'lib' / PACKAGE / name
        assert script.is_file(), f'{name} is not in lib/{PACKAGE}'
        assert os.access(script, os.X_OK), f'{name} is not executable'
        interpreter = script.read_text().splitlines()[0].removeprefix('#!').split()[0]
        assert Path(interpreter).is_file(), f'{name} names a missing interpreter {interpreter}'


def test_python_package_and_data_installed(prefix):
    packages = list(prefix.glob(f'lib/python*/site-packages/{PACKAGE}'))
    assert len(packages) == 1, packages
    for name in source_files(PACKAGE, '*.py'):
        assert (packages[0] / name).is_file(), f'{PACKAGE}/{name} is not installed'
    for name in source_files(f'{PACKAGE}/data', '*'):
        assert (packages[0] / 'data' / name).is_file(), f'{PACKAGE}/data/{name} not installed'


def test_ament_index_finds_the_installed_share_directory(prefix, share):
    site_packages = next(prefix.glob('lib/python*/site-packages'))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(site_packages))
    script = textwrap.dedent("""
        from ament_index_python.packages import get_package_share_directory
        import segtrack_ros.ros.transport
        print(get_package_share_directory('segtrack_ros'))
        print(segtrack_ros.__file__)
        print(segtrack_ros.ros.transport.profile_path())
    """)
    # cwd: `python -c` puts it first on sys.path, and the checkout's segtrack_ros must not win
    result = subprocess.run([sys.executable, '-c', script], cwd=prefix, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    share_directory, module_file, profile = result.stdout.splitlines()
    assert Path(share_directory) == share
    assert Path(module_file).is_relative_to(site_packages)  # the installed copy, not the source
    assert Path(profile) == share / 'config' / 'fastdds_large_data.xml'

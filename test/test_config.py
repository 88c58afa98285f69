"""
The parameter table, config/segtrack.yaml, the launch files and the README agree.

The launch files' argument tables are read as source everywhere; their launch descriptions are
loaded where launch is installed (ROS installs, and the pip venv when ../shared/ros-launch
exists), and test/test_launch.py runs them there.
"""

import ast
from pathlib import Path

import pytest
from segtrack_ros.params import BY_NAME, check_combination, PARAMETERS, yaml_text
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / 'launch'
LAUNCH_FILES = ('segtrack.launch.py', 'demo.launch.py', 'multi_camera.launch.py')
API_LAUNCH_ARGUMENTS = {'device', 'color_mode', 'mode', 'model', 'image', 'params_file',
                        'namespace', 'rviz', 'autostart'}
# What every launch file takes (issue 17); segtrack and multi_camera also input_transport.
COMMON_ARGUMENTS = {'model', 'device', 'mode', 'color_mode', 'qos_reliability', 'autostart',
                    'use_sim_time', 'log_level', 'namespace', 'params_file', 'rviz'}
PLUMBING_ARGUMENTS = {'image', 'cameras', 'images', 'params_file', 'namespace', 'log_level',
                      'rviz', 'depth_image', 'depth_camera_info'}
PUBLISHER_ARGUMENTS = {'source', 'rate', 'loop'}
ROS_PARAMETERS = {'use_sim_time'}  # rclpy's own
BOOLEAN = ('true', 'false')


def launch_tables(path):
    """Return the module-level tuple constants of a launch file, read as source."""
    tree = ast.parse(path.read_text())
    return {target.id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
            for target in node.targets if isinstance(target, ast.Name)}


def declared_arguments(name):
    """Return the DeclareLaunchArgument actions of a launch file, by name (needs launch)."""
    sources = pytest.importorskip('launch.launch_description_sources',
                                  reason='launch is not installed (see test/test_launch.py)')
    description = sources.get_launch_description_from_python_launch_file(str(LAUNCH / name))
    return {argument.name: argument for argument in description.get_launch_arguments()}


def test_yaml_is_generated_from_the_table():
    """config/segtrack.yaml is exactly what params.py generates: no drift."""
    assert (REPO / 'config' / 'segtrack.yaml').read_text() == yaml_text()


def test_yaml_declares_every_parameter_with_its_default():
    """Every key is a declared parameter and every default matches."""
    loaded = yaml.safe_load((REPO / 'config' / 'segtrack.yaml').read_text())
    values = loaded['/**']['ros__parameters']
    assert set(values) == set(BY_NAME)
    for name, value in values.items():
        assert value == BY_NAME[name].default, name


def test_defaults_are_valid():
    """Each default passes its own check, and the defaults agree with each other."""
    for spec in PARAMETERS:
        assert spec.check(spec.default) is None, spec.name
    assert check_combination({spec.name: spec.default for spec in PARAMETERS}) is None


def test_checks_refuse_bad_values():
    """Choices and ranges are enforced, with the parameter named in the reason."""
    assert 'mode' in BY_NAME['mode'].check('banana')
    assert 'conf' in BY_NAME['conf'].check(1.5)
    assert 'classes' in BY_NAME['classes'].check([1, -3])
    assert BY_NAME['classes'].check([0, 5]) is None
    assert 'mode track' in check_combination({'mode': 'predict', 'color_mode': 'track'})


def test_parameter_arguments_match_the_parameter_table():
    """segtrack.launch.py's node parameter arguments take the values the parameters take."""
    tables = launch_tables(LAUNCH / 'segtrack.launch.py')
    for name, choices, _ in tables['PARAMETER_ARGUMENTS']:
        if name in ROS_PARAMETERS:
            assert choices == BOOLEAN, name
            continue
        spec = BY_NAME[name]
        assert choices == (BOOLEAN if isinstance(spec.default, bool) else spec.choices), name
    assert {row[0] for row in tables['OTHER_ARGUMENTS']} <= PLUMBING_ARGUMENTS


def test_launch_files_declare_the_arguments_users_expect():
    """The API's arguments, and on every file use_sim_time, log_level, autostart and the rest."""
    segtrack = declared_arguments('segtrack.launch.py')
    assert API_LAUNCH_ARGUMENTS <= set(segtrack)
    for name in LAUNCH_FILES:
        arguments = set(declared_arguments(name))
        assert COMMON_ARGUMENTS <= arguments, name
        assert ('input_transport' in arguments) == (name != 'demo.launch.py'), name
        assert arguments <= (set(BY_NAME) | ROS_PARAMETERS | PLUMBING_ARGUMENTS
                             | PUBLISHER_ARGUMENTS), name


def test_node_parameter_arguments_leave_the_value_to_the_params_file():
    """Their default is '' (not given), so params_file's value stands unless one is given."""
    parameters = {row[0] for row in launch_tables(LAUNCH / 'segtrack.launch.py')[
        'PARAMETER_ARGUMENTS']}
    for name in LAUNCH_FILES:
        for argument in declared_arguments(name).values():
            if argument.name in parameters:
                assert [part.text for part in argument.default_value] == [''], argument.name
                assert not argument.choices or '' in argument.choices, argument.name


def test_readme_names_every_launch_argument():
    """The README's "Launch files" part names each argument of each launch file."""
    readme = (REPO / 'README.md').read_text()
    section = readme.split('### Launch files')[1].split('\n## ')[0]
    for name in LAUNCH_FILES:
        assert f'`{name}`' in section or f'launch/{name}' in section, name
        for argument in declared_arguments(name):
            assert f'`{argument}' in section, f'{name}: {argument}'


def test_readme_documents_every_parameter():
    """The README's parameter table has a row per parameter with its default."""
    readme = (REPO / 'README.md').read_text()
    for spec in PARAMETERS:
        default = yaml_text().split(f'    {spec.name}: ')[1].split('\n')[0]
        assert f'| `{spec.name}` | `{default}` |' in readme, spec.name

"""
The parameter table, config/segtrack.yaml, the launch files and the README agree.

launch and launch_ros are not on PyPI: the launch files are read as source here, and launched
for real only where launch_ros is importable.
"""

import ast
from pathlib import Path

import pytest
from segtrack_ros.params import BY_NAME, check_combination, PARAMETERS, yaml_text
import yaml

REPO = Path(__file__).resolve().parent.parent
API_LAUNCH_ARGUMENTS = {'device', 'color_mode', 'mode', 'model', 'image', 'params_file',
                        'namespace', 'rviz'}
PLUMBING_ARGUMENTS = {'image', 'params_file', 'namespace', 'rviz'}


def launch_arguments(path):
    """Names of the DeclareLaunchArgument calls in a launch file, and its constant tables."""
    tree = ast.parse(path.read_text())
    names = {node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, 'id', '') ==
             'DeclareLaunchArgument' and isinstance(node.args[0], ast.Constant)}
    tables = {target.id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) for target in node.targets
              if isinstance(target, ast.Name) and isinstance(node.value, ast.Tuple)}
    return names, tables


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


def test_segtrack_launch_arguments_map_onto_parameters():
    """Every launch argument is a node parameter or plumbing; the API's are all there."""
    names, tables = launch_arguments(REPO / 'launch' / 'segtrack.launch.py')
    assert API_LAUNCH_ARGUMENTS <= names | {n for n, _, _ in
                                            tables['NODE_PARAMETER_ARGUMENTS']}
    for name, default, _ in tables['NODE_PARAMETER_ARGUMENTS']:
        assert name in BY_NAME, name
        assert default == BY_NAME[name].default, name
    declared = names | {name for name, _, _ in tables['NODE_PARAMETER_ARGUMENTS']}
    assert declared - PLUMBING_ARGUMENTS <= set(BY_NAME)


def test_demo_launch_passes_parameters_by_their_names():
    """demo.launch.py's node arguments are node parameters or video_publisher's."""
    names, _ = launch_arguments(REPO / 'launch' / 'demo.launch.py')
    publisher_parameters = {'source', 'rate', 'loop'}
    assert names - publisher_parameters - {'rviz'} <= set(BY_NAME)


def test_readme_documents_every_parameter():
    """The README's parameter table has a row per parameter with its default."""
    readme = (REPO / 'README.md').read_text()
    for spec in PARAMETERS:
        default = yaml_text().split(f'    {spec.name}: ')[1].split('\n')[0]
        assert f'| `{spec.name}` | `{default}` |' in readme, spec.name


def test_real_launch_where_launch_ros_exists():
    """Launch segtrack.launch.py's description for real (ROS installs only)."""
    launch_ros = pytest.importorskip(
        'launch_ros', reason='launch_ros is not on PyPI; it runs on ROS installs (colcon test)')
    from launch import LaunchDescription
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    description = get_launch_description_from_python_launch_file(
        str(REPO / 'launch' / 'segtrack.launch.py'))
    assert isinstance(description, LaunchDescription)
    nodes = [entity for entity in description.entities
             if isinstance(entity, launch_ros.actions.Node)]
    assert len(nodes) == 2

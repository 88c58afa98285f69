"""
The package's folders are dependency rules: programs → pipeline → io → core, never back up.

Every import statement of every module is read (lazy imports inside functions included), so a
rule broken anywhere in a folder, or a circle of imports between any two modules, fails here.
Fresh interpreters check what importing really does: the core and eval load nothing of ROS
(io may load message types and `rclpy.serialization`), and no module but the one that imports
ultralytics on purpose loads torch or ultralytics or sets an environment variable.
"""

import ast
from graphlib import CycleError, TopologicalSorter
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'segtrack_ros'

# Folder → the package's own layers it may import ('' = pipeline, runners, params at the top).
ALLOWED_LAYERS = {
    'core': {'core'},
    'io': {'core', 'io'},
    '': {'core', 'io', ''},
    'eval': {'core', 'io', 'eval'},
    'cli': {'core', 'io', '', 'cli'},
    'ros': {'core', 'io', '', 'ros'},
}
# Folder → whether it may use ROS at all (message types, bags, the ament index) and rclpy.
# `rclpy.serialization` (CDR bytes ↔ messages, no node or context) is the I/O layer's tool.
MAY_USE_MESSAGES = {'core': False, 'io': True, '': True, 'eval': False, 'cli': True, 'ros': True}
MAY_USE_RCLPY = {'ros'}
MAY_SERIALIZE = {'io', 'ros'}
LAYERS = {'core', 'io', 'eval', 'cli', 'ros'}
# Roots of ROS modules: rclpy and rcl_*, rosbag2_py, rosbags, rosidl_*, rmw_*, ament_*, launch*,
# tf2_*, cv_bridge, message_filters (and, by suffix, every message, service and interface package).
ROS_PREFIXES = ('rcl', 'ros', 'rmw', 'rpyutils', 'ament_', 'launch', 'tf2', 'cv_bridge',
                'message_filters')
# The one module that imports ultralytics (which sets OMP_NUM_THREADS=1 when it is unset) and
# torch when it is imported: the segmenter imports it only when it makes its model.
IMPORTS_ULTRALYTICS = {'segtrack_ros.core.crop_predictor'}
PROCESS_VARIABLES = ('OMP_NUM_THREADS', 'YOLO_OFFLINE', 'YOLO_AUTOINSTALL')


def imported_names(source):
    """Return every module name an import statement in `source` names (absolute imports)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f'relative import of {node.module!r}: use absolute imports')
            if node.module == 'segtrack_ros':  # `from segtrack_ros import core` names a layer
                names += [f'segtrack_ros.{alias.name}' for alias in node.names]
            else:
                names.append(node.module)
    return names


def is_ros(name):
    """Return whether module `name` is a ROS one (rclpy, messages, bags, tf2, cv_bridge, ...)."""
    root = name.split('.')[0]
    return root.startswith(ROS_PREFIXES) or root.endswith(('_msgs', '_srvs', '_interfaces'))


def layer_of(name):
    """Return the layer of a segtrack_ros module name ('' for the top-level modules)."""
    parts = name.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ''


def violations(layer, source):
    """Return the imports in `source` that a module of folder `layer` must not make."""
    found = []
    for name in imported_names(source):
        if name == 'segtrack_ros' or name.startswith('segtrack_ros.'):
            if name != 'segtrack_ros' and layer_of(name) not in ALLOWED_LAYERS[layer]:
                found.append(name)
        elif name.split('.')[0] == 'rclpy':
            if layer not in (MAY_SERIALIZE if name == 'rclpy.serialization' else MAY_USE_RCLPY):
                found.append(name)
        elif is_ros(name) and not MAY_USE_MESSAGES[layer]:
            found.append(name)
    return found


def modules():
    """Yield (layer, path) for every module of the package."""
    for path in sorted(PACKAGE.rglob('*.py')):
        folder = path.parent.relative_to(PACKAGE).as_posix()
        yield ('' if folder == '.' else folder), path


def module_name(path):
    """Return the dotted name of the package's module at `path`."""
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def package_imports(source, names):
    """Return the modules among `names` that `source` imports (`from a import b`: a.b if one)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in names
                         else node.module for alias in node.names)
    return found & names


def import_cycle(graph):
    """Return a circle of imports in `graph` (module → modules it imports), or None."""
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return error.args[1]
    return None


def imports_in_fresh_interpreter(names):
    """
    Import `names` in a new interpreter without PROCESS_VARIABLES.

    Returns the modules those imports loaded (not those the interpreter starts with, such as
    the ROS wheels' `.pth` bootstrapper) and the values of PROCESS_VARIABLES afterwards.
    """
    script = ('import importlib, json, os, sys\n'
              'before = set(sys.modules)\n'
              f'for name in {names!r}:\n    importlib.import_module(name)\n'
              f'print(json.dumps([sorted(set(sys.modules) - before), {{name: os.environ.get(name) '
              f'for name in {PROCESS_VARIABLES!r}}}]))')
    env = {name: value for name, value in os.environ.items() if name not in PROCESS_VARIABLES}
    loaded, variables = json.loads(subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, check=True,
        env=env).stdout)
    return loaded, variables


def test_every_folder_is_a_known_layer():
    assert {layer for layer, _ in modules()} == set(ALLOWED_LAYERS)


@pytest.mark.parametrize('layer', sorted(ALLOWED_LAYERS))
def test_folder_imports_only_what_its_rule_allows(layer):
    broken = {path.relative_to(PACKAGE).as_posix(): violations(layer, path.read_text())
              for folder, path in modules() if folder == layer}
    assert not {path: names for path, names in broken.items() if names}


@pytest.mark.parametrize('layer, source', [
    ('core', 'import rclpy'),
    ('core', 'def f():\n    from sensor_msgs.msg import Image\n'),
    ('core', 'from segtrack_ros.pipeline import FramePipeline'),
    ('core', 'from segtrack_ros import io'),
    ('io', 'from rclpy.node import Node'),
    ('io', 'from segtrack_ros.ros.node import SegTrackNode'),
    ('', 'from segtrack_ros.cli import common'),
    ('eval', 'from vision_msgs.msg import Detection2DArray'),
    ('cli', 'import rclpy'),
    ('cli', 'from rclpy.serialization import serialize_message'),
])
def test_the_check_catches_a_broken_rule(layer, source):
    assert violations(layer, source)


@pytest.mark.parametrize('layer, source', [
    ('io', 'from rclpy.serialization import serialize_message'),
    ('io', 'from segtrack_ros.core.labels import mask_values'),
    ('ros', 'import rclpy\nfrom segtrack_ros.pipeline import FramePipeline'),
])
def test_the_check_allows_what_the_rules_allow(layer, source):
    assert not violations(layer, source)


def test_no_module_imports_itself_through_others():
    names = {module_name(path) for _, path in modules()}
    graph = {module_name(path): package_imports(path.read_text(), names) for _, path in modules()}
    assert import_cycle(graph) is None


def test_the_cycle_check_finds_a_lazy_circle():
    names = {'segtrack_ros.a', 'segtrack_ros.b', 'segtrack_ros.c'}
    graph = {'segtrack_ros.a': package_imports('from segtrack_ros import b', names),
             'segtrack_ros.b': package_imports('def f():\n    import segtrack_ros.c\n', names),
             'segtrack_ros.c': package_imports('from segtrack_ros.a import x', names)}
    assert set(import_cycle(graph)) == names
    graph['segtrack_ros.c'] = set()
    assert import_cycle(graph) is None


@pytest.mark.parametrize('name, ros', [
    ('rclpy.serialization', True), ('sensor_msgs.msg', True), ('cv_bridge', True),
    ('rosbag2_py', True), ('tf2_ros', True), ('tf2_geometry_msgs', True),
    ('message_filters', True), ('rosidl_runtime_py', True), ('launch_ros.actions', True),
    ('numpy', False), ('cv2', False), ('torch', False), ('ultralytics', False),
])
def test_ros_modules_are_known_by_name(name, ros):
    assert is_ros(name) == ros


def test_core_and_eval_load_nothing_of_ros():
    loaded, _ = imports_in_fresh_interpreter(
        [module_name(path) for layer, path in modules() if layer in {'core', 'eval'}])
    assert not [name for name in loaded if is_ros(name)]


def test_importing_the_package_changes_nothing_global():
    """`import segtrack_ros`, and of any module but crop_predictor, sets no variable, no torch."""
    names = sorted({module_name(path) for _, path in modules()} - IMPORTS_ULTRALYTICS)
    loaded, variables = imports_in_fresh_interpreter(names)
    assert variables == dict.fromkeys(PROCESS_VARIABLES)
    assert not {'torch', 'ultralytics'} & set(loaded)

"""
The package's folders are dependency rules: programs → pipeline → io → core, never back up.

Every import statement of every module is read (lazy imports inside functions included), so a
rule broken anywhere in a folder fails here, and a fresh interpreter checks that importing the
core and the I/O layer really loads no rclpy.
"""

import ast
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
    """Return whether module `name` is a ROS one (rclpy, message packages, bags, ament)."""
    root = name.split('.')[0]
    return (root in {'rclpy', 'rosbags', 'ament_index_python', 'launch', 'launch_ros',
                     'rosidl_runtime_py', 'builtin_interfaces'}
            or root.endswith(('_msgs', '_srvs', '_interfaces')))


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


def test_core_and_eval_load_nothing_of_ros():
    names = [f'segtrack_ros.{layer}.{path.stem}' for layer, path in modules()
             if layer in {'core', 'eval'} and path.stem != '__init__']
    script = ('import importlib, sys\n'
              f'for name in {names!r}:\n    importlib.import_module(name)\n'
              'print(" ".join(sys.modules))')
    loaded = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            check=True).stdout.split()
    assert not [name for name in loaded if is_ros(name)]

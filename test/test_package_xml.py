"""
package.xml declares what the package needs at run time and agrees with setup.py.

The run-time imports are read from the sources with `ast`: every import statement of
segtrack_ros/ and launch/, also those inside functions and try blocks (an optional import is
still a dependency: rosdep should install it where it exists). Standard-library modules and the
package itself are left out; every other module maps to the rosdep key that provides it, and
that key must be an <exec_depend> (or <depend>). Packages that the launch files start or look
up (`package='...'`, `FindPackageShare('...')`) are run-time dependencies too. In the other
direction, no run-time dependency may be declared that nothing uses, unless it is listed in
DECLARED_WITHOUT_IMPORT with the reason.
"""

import ast
from pathlib import Path
import sys
import xml.etree.ElementTree as ElementTree

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'segtrack_ros'
RUNTIME_SOURCES = (f'{PACKAGE}/**/*.py', 'launch/*.py')

# Python module -> rosdep key of the package that provides it; the longest matching dotted
# prefix wins, first in ROSDEP_KEYS, then in PROVIDED_BY.
ROSDEP_KEYS = {
    'ament_index_python': 'ament_index_python',
    'builtin_interfaces': 'builtin_interfaces',
    'cv2': 'python3-opencv',
    'cv_bridge': 'cv_bridge',
    'diagnostic_msgs': 'diagnostic_msgs',
    'geometry_msgs': 'geometry_msgs',
    'launch': 'launch',
    'launch_ros': 'launch_ros',
    'numpy': 'python3-numpy',
    'rcl_interfaces': 'rcl_interfaces',
    'rclpy': 'rclpy',
    'rosbags': 'python3-rosbags-pip',
    'sensor_msgs': 'sensor_msgs',
    'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs',
    'ultralytics': 'python3-ultralytics-pip',
    'vision_msgs': 'vision_msgs',
    'visualization_msgs': 'visualization_msgs',
    'yaml': 'python3-yaml',
}

# Imported modules that come with another dependency instead of a key of their own.
PROVIDED_BY = {
    # torch is a hard requirement of ultralytics, so pip installs it with ultralytics. The
    # rosdep key python3-torch would install the distribution's CPU-only apt build, which pip
    # then keeps instead of the CUDA wheels: declaring it would cost GPU users their GPU.
    'torch': 'python3-ultralytics-pip',
    # rosbags-image converts images only where cv_bridge is missing (the pip route, which
    # installs it from requirements.txt); ROS installs use cv_bridge. It has no rosdep key.
    'rosbags.image': 'cv_bridge',
}

# Imports of development commands only, which no robot runs, with the reason.
DEVELOPMENT_ONLY = {
    'motmetrics': 'segtrack-eval (make eval) only; requirements-dev.txt has it, rosdep has no key',
    'trackeval': 'segtrack-eval --trackers only; requirements-dev.txt has it, rosdep has no key',
    'ray': 'segtrack-fleet, an optional extra (segtrack_ros[fleet], requirements-fleet.txt); '
           'a robot running the node does not need it, rosdep has no key',
}

# Declared run-time dependencies that no import or launch file shows, with the reason.
DECLARED_WITHOUT_IMPORT = {}

# Packages the launch files may start without declaring them, with the reason.
OPTIONAL_LAUNCH_PACKAGES = {
    'rviz2': 'started only with rviz:=true; robots run headless without it',
}

# Calls of launch files whose first argument names a package.
PACKAGE_LOOKUPS = ('FindPackageShare', 'FindPackagePrefix', 'get_package_share_directory',
                   'get_package_prefix')


def imported_modules(source, filename='<source>'):
    """
    Return {module: [line, ...]} of the absolute imports in `source`.

    `import a.b` gives a.b and `from a.b import c` gives a.b. Standard-library modules, PACKAGE
    and relative imports (also the package's) are left out.
    """
    modules = {}
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.partition('.')[0]
            if top != PACKAGE and top not in sys.stdlib_module_names:
                modules.setdefault(name, []).append(node.lineno)
    return modules


def launched_packages(source, filename='<source>'):
    """Return {package: [line, ...]} that launch code starts or looks up, PACKAGE excepted."""
    packages = {}
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        values = [keyword.value for keyword in node.keywords if keyword.arg == 'package']
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, 'id', None)
        if function in PACKAGE_LOOKUPS and node.args:
            values.append(node.args[0])
        for value in values:
            if isinstance(value, ast.Constant) and value.value != PACKAGE:
                packages.setdefault(value.value, []).append(node.lineno)
    return packages


def rosdep_key(module):
    """Return the rosdep key that provides `module`, or None when no mapping knows it."""
    parts = module.split('.')
    for length in range(len(parts), 0, -1):
        prefix = '.'.join(parts[:length])
        if prefix in ROSDEP_KEYS:
            return ROSDEP_KEYS[prefix]
        if prefix in PROVIDED_BY:
            return PROVIDED_BY[prefix]
    return None


def runtime_sources():
    """Return {path relative to REPO: source text} of the files that run when the package runs."""
    paths = sorted({path for pattern in RUNTIME_SOURCES for path in REPO.glob(pattern)})
    return {str(path.relative_to(REPO)): path.read_text(encoding='utf-8') for path in paths}


def collect(function, sources):
    """Merge `function`(source) over `sources` into {name: ['file:line', ...]}."""
    found = {}
    for filename, source in sources.items():
        for name, lines in function(source, filename).items():
            found.setdefault(name, []).extend(f'{filename}:{line}' for line in lines)
    return found


def required_keys(modules):
    """Return ({rosdep key: [where, ...]}, {unmapped module: [where, ...]}) for `modules`."""
    keys, unknown = {}, {}
    for module, places in modules.items():
        key = rosdep_key(module)
        if key is None:
            unknown.setdefault(module, []).extend(places)
        else:
            keys.setdefault(key, []).extend(places)
    return keys, unknown


def manifest(path=REPO / 'package.xml'):
    """Return the parsed package.xml root element."""
    return ElementTree.parse(path).getroot()


def runtime_dependencies(root):
    """Return the names of the <exec_depend> and <depend> entries of a package.xml root."""
    return {element.text.strip() for tag in ('exec_depend', 'depend')
            for element in root.findall(tag)}


def setup_arguments(path=REPO / 'setup.py'):
    """
    Return the constant keyword arguments of the setup() call in setup.py.

    A keyword given as the name of a module-level constant (name=PACKAGE) is resolved.
    """
    tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup':
            arguments = {}
            for keyword in node.keywords:
                if isinstance(keyword.value, ast.Constant):
                    arguments[keyword.arg] = keyword.value.value
                elif isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
                    arguments[keyword.arg] = constants[keyword.value.id]
            return arguments
    raise AssertionError('setup.py calls no setup()')


def listing(found):
    """Format {name: [where, ...]} as one line per name for an assertion message."""
    return '\n'.join(f'  {name}: {", ".join(places)}' for name, places in sorted(found.items()))


def test_format_3_ament_python():
    root = manifest()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == PACKAGE
    assert root.findtext('export/build_type') == 'ament_python'


def test_agrees_with_setup_py():
    root = manifest()
    arguments = setup_arguments()
    assert root.findtext('name') == arguments['name']
    assert root.findtext('version') == arguments['version'], 'package.xml and setup.py versions'
    licenses = [element.text.strip() for element in root.findall('license')]
    assert licenses and all(licenses), 'package.xml declares no license'
    assert arguments['license'] in licenses
    assert root.find('maintainer').get('email') == arguments['maintainer_email']


def test_every_runtime_import_is_declared():
    modules = collect(imported_modules, runtime_sources())
    keys, unknown = required_keys({module: places for module, places in modules.items()
                                   if module.split('.')[0] not in DEVELOPMENT_ONLY})
    assert not unknown, (
        'imports with no rosdep key: add them to ROSDEP_KEYS (or PROVIDED_BY) and to '
        f'package.xml:\n{listing(unknown)}')
    missing = {key: places for key, places in keys.items()
               if key not in runtime_dependencies(manifest())}
    assert not missing, f'add <exec_depend> to package.xml for:\n{listing(missing)}'


def test_every_launched_package_is_declared():
    packages = collect(launched_packages, runtime_sources())
    missing = {name: places for name, places in packages.items()
               if name not in runtime_dependencies(manifest())
               and name not in OPTIONAL_LAUNCH_PACKAGES}
    assert not missing, f'add <exec_depend> to package.xml for:\n{listing(missing)}'


def test_no_unused_runtime_dependency():
    sources = runtime_sources()
    used = set(required_keys(collect(imported_modules, sources))[0])
    used |= set(collect(launched_packages, sources))
    unused = runtime_dependencies(manifest()) - used - set(DECLARED_WITHOUT_IMPORT)
    assert not unused, (
        f'declared but neither imported nor launched: {", ".join(sorted(unused))} (remove them, '
        'or list them in DECLARED_WITHOUT_IMPORT with the reason)')


def test_allow_lists_give_reasons():
    for reasons in (DECLARED_WITHOUT_IMPORT, OPTIONAL_LAUNCH_PACKAGES):
        assert all(isinstance(reason, str) and reason for reason in reasons.values())
    assert set(PROVIDED_BY.values()) <= set(ROSDEP_KEYS.values())


def test_checks_on_a_constructed_package(tmp_path):
    source = '\n'.join([
        'import os.path',
        'import numpy as np',
        'from . import labels',
        'from segtrack_ros.core.render import Renderer',
        'from rosbags.image import message_to_cvimage',
        'from rosbags.rosbag2 import Reader',
        'try:',
        '    from cv_bridge import CvBridge',
        'except ImportError:',
        '    CvBridge = None',
        'def load():',
        '    import torch',
        '    import not_a_known_module.sub',
        "    return Node(package='rviz2'), FindPackageShare('segtrack_ros'), get_package_prefix(",
        "        'tf2_ros')",
    ])
    modules = imported_modules(source)
    assert set(modules) == {'numpy', 'rosbags.image', 'rosbags.rosbag2', 'cv_bridge', 'torch',
                            'not_a_known_module.sub'}
    assert modules['torch'] == [12]
    keys, unknown = required_keys(modules)
    assert set(keys) == {'python3-numpy', 'python3-rosbags-pip', 'cv_bridge',
                         'python3-ultralytics-pip'}
    assert set(unknown) == {'not_a_known_module.sub'}
    assert launched_packages(source) == {'rviz2': [14], 'tf2_ros': [14]}

    # A package.xml that lacks cv_bridge and declares an unused key fails both directions.
    xml = tmp_path / 'package.xml'
    xml.write_text('<package format="3"><name>x</name><exec_depend>python3-numpy</exec_depend>'
                   '<depend>python3-yaml</depend></package>')
    declared = runtime_dependencies(manifest(xml))
    assert declared == {'python3-numpy', 'python3-yaml'}
    assert set(keys) - declared == {'python3-rosbags-pip', 'cv_bridge',
                                    'python3-ultralytics-pip'}
    assert declared - set(keys) == {'python3-yaml'}

    setup = tmp_path / 'setup.py'
    setup.write_text("NAME = 'x'\nsetup(name=NAME, version='1.2.3', license='MIT', "
                     'packages=find_packages())\n')
    assert setup_arguments(setup) == {'name': 'x', 'version': '1.2.3', 'license': 'MIT'}

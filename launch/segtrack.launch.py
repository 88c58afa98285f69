"""
Launch segtrack_node on one camera, or one node on several cameras, optionally with rviz.

    ros2 launch segtrack_ros segtrack.launch.py image:=/camera/image_raw device:=cuda:0
    ros2 launch segtrack_ros segtrack.launch.py params_file:=my_robot.yaml mode:=predict
    ros2 launch segtrack_ros segtrack.launch.py model:=yolov8n-seg.pt export_format:=openvino
    ros2 launch segtrack_ros segtrack.launch.py model:=yolov8n-seg.pt export_format:=engine \
        half:=true device:=cuda:0
    ros2 launch segtrack_ros segtrack.launch.py model:=shapes-seg.pt cameras:=front,rear \
        images:=/front_camera/image_raw,/rear_camera/image_raw

The arguments that set node parameters (PARAMETER_ARGUMENTS) are empty by default: the parameter
then comes from `params_file` (default config/segtrack.yaml, every parameter at its default);
given, an argument wins over the file. A node that fails to start, or stops by itself, ends the
launch: with a non-zero exit code and its reason when it failed. An argument this file does not
declare is named in a warning. demo.launch.py and multi_camera.launch.py reuse the arguments and
helpers of this file.
"""

import os
from pathlib import Path
import re
from typing import List

from ament_index_python.packages import get_package_prefix, PackageNotFoundError
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, GroupAction,
                            IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler,
                            ResetLaunchConfigurations)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
import launch.logging
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

LAUNCH_FILE = Path(__file__).resolve()
CONFIG = LAUNCH_FILE.parent.parent / 'config'
BOOLEAN = ('true', 'false')
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')  # colours of emulate_tty logs

# Arguments that set the node parameter of the same name: name, allowed values, description.
# Their default is '' = not given: the parameter keeps the value from params_file.
PARAMETER_ARGUMENTS = (
    ('model', (), 'model: .pt/.onnx/.engine file, OpenVINO folder or official name; '
                  'shapes-seg.pt is the bundled one'),
    ('device', (), 'auto, cpu, cuda, cuda:N, N or mps'),
    ('export_format', ('', 'onnx', 'openvino', 'engine', 'torchscript'),
     'export model (a .pt) once on this machine and run the export: openvino on a CPU, engine '
     '(TensorRT) on a CUDA GPU; empty runs model as it is'),
    ('half', ('true', 'false'), 'half precision: FP16 on CUDA, bf16 for OpenVINO on CPUs with it'),
    ('mode', ('predict', 'track'), 'segmentation only, or with tracking'),
    ('color_mode', ('class', 'track'), 'colour by class, or by track id (needs mode track)'),
    ('input_transport', ('raw', 'compressed'),
     'raw reads sensor_msgs/Image on the image topic, compressed reads IMAGE/compressed'),
    ('qos_reliability', ('best_effort', 'reliable'), 'reliability of the image subscription'),
    ('depth', ('true', 'false'),
     '3D from a depth camera: read depth_image and depth_camera_info, publish detections_3d, '
     'markers and points'),
    ('autostart', ('true', 'false'),
     'configure and activate at start, or wait unconfigured for a lifecycle manager'),
    ('use_sim_time', ('true', 'false'), 'take the time from /clock'),
)
# The other arguments: name, default, allowed values, description.
OTHER_ARGUMENTS = (
    ('namespace', '', (), 'namespace of the nodes and their topics'),
    ('image', 'image', (), 'input topic of the one camera (raw; with input_transport '
                           'compressed the node reads IMAGE/compressed)'),
    ('cameras', '', (), 'comma-separated camera names for one node on several cameras: camera '
                        'C publishes C/annotated_image, ...; empty = one camera on image'),
    ('images', '', (), 'comma-separated input topics of the cameras, in their order; empty = '
                       'camera C reads C/image'),
    ('depth_image', 'depth/image', (), 'depth image topic of the one camera, registered to the '
                                       'colour image (16UC1/mono16 mm or 32FC1 m; depth:=true)'),
    ('depth_camera_info', 'depth/camera_info', (), 'CameraInfo topic of that depth image'),
    ('log_level', 'info', ('debug', 'info', 'warn', 'error', 'fatal'), 'log level of the nodes'),
    ('rviz', 'false', ('true', 'false'),
     'start rviz2 with config/segtrack.rviz (on the first camera)'),
)
PARAMS_FILE_DESCRIPTION = 'YAML file of node parameters, under the given arguments'
LOGGER = launch.logging.get_logger(LAUNCH_FILE.name)


def launch_arguments(defaults=None, leave_out=()):
    """
    Return this file's DeclareLaunchArgument actions, `defaults` replacing some defaults.

    The node parameter arguments accept '' (their default: not given) besides their values.
    """
    defaults = defaults or {}
    rows = [(name, '', tuple(dict.fromkeys(('', *choices))) if choices else (),
             description + " ('' = from params_file)")
            for name, choices, description in PARAMETER_ARGUMENTS]
    rows += list(OTHER_ARGUMENTS)
    rows.append(('params_file', str(CONFIG / 'segtrack.yaml'), (), PARAMS_FILE_DESCRIPTION))
    return [DeclareLaunchArgument(name, default_value=defaults.get(name, default),
                                  choices=list(choices) or None, description=description)
            for name, default, choices, description in rows if name not in leave_out]


def argument_names(arguments):
    """Return the names of DeclareLaunchArgument actions."""
    return [argument.name for argument in arguments]


def warn_about_undeclared(file_name, declared):
    """
    Return an action that names the command-line arguments `file_name` does not declare.

    Only arguments that reached this file's launch configurations are checked, so a file
    included with its own arguments (scoped_include) does not name those of its includer.
    """
    def check(context):
        for argument in context.argv:
            name = argument.split(':=', 1)[0]
            if name in context.launch_configurations and name not in declared:
                LOGGER.warning(f"'{argument}' is not an argument of {file_name}: ignored "
                               f'(see ros2 launch segtrack_ros {file_name} --show-args)')
    return OpaqueFunction(function=check)


def scoped_include(launch_file, arguments):
    """
    Include `launch_file` with exactly `arguments` (name -> value): nothing leaks in or out.

    Its launch configurations start from `arguments` alone and are dropped after it; the
    environment is kept.
    """
    return GroupAction([ResetLaunchConfigurations(arguments),
                        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)))])


def end_launch_on_exit(process, executable):
    """
    Return the event handlers that end the launch when `process` ends (unless it is ending).

    A non-zero exit raises: the launch shuts down and exits non-zero, with the reason that the
    process printed (`<executable>: error: <reason>` on stderr, else its last stderr line).
    """
    prefix = f'{executable}: error: '
    printed = {}

    def remember_reason(event):
        for line in ANSI_ESCAPE.sub('', event.text.decode(errors='replace')).splitlines():
            if line.startswith(prefix):
                printed['reason'] = line[len(prefix):]
            elif line.strip():
                printed['last'] = line.strip()

    def on_exit(event, context):
        if context.is_shutdown:
            return None
        if event.returncode != 0:
            reason = printed.get('reason', printed.get('last'))
            raise RuntimeError(f'{executable} failed (exit code {event.returncode})'
                               + (f': {reason}' if reason else ''))
        return [EmitEvent(event=Shutdown(reason=f'{executable} ended'))]

    return [RegisterEventHandler(OnProcessIO(target_action=process, on_stderr=remember_reason)),
            RegisterEventHandler(OnProcessExit(target_action=process, on_exit=on_exit))]


def split_list(text):
    """Return the items of a comma-separated list ('front,rear' or '[front, rear]')."""
    return [item.strip() for item in text.strip('[] ').split(',') if item.strip()]


def given_parameters(configurations):
    """Return the node parameters set by arguments that were given (not '')."""
    parameters = {}
    for name, choices, _ in PARAMETER_ARGUMENTS:
        value = configurations[name]
        if value and choices == BOOLEAN:
            parameters[name] = value == 'true'
        elif value:
            parameters[name] = ParameterValue(value, value_type=str)
    return parameters


def camera_remappings(configurations):
    """Return the cameras and the remappings of their input topics; refuse a mismatch."""
    cameras, images = split_list(configurations['cameras']), split_list(configurations['images'])
    image = configurations['image']
    if not cameras:
        if images:
            raise RuntimeError('images is for several cameras: give cameras too, or image '
                               'for one camera')
        return [], [('image', image), ('image/compressed', f'{image}/compressed'),
                    ('depth/image', configurations['depth_image']),
                    ('depth/camera_info', configurations['depth_camera_info'])]
    if image != 'image':
        raise RuntimeError('image is for one camera: with cameras, give their topics in images')
    if (configurations['depth_image'], configurations['depth_camera_info']) != (
            'depth/image', 'depth/camera_info'):
        raise RuntimeError('depth_image and depth_camera_info are for one camera: with cameras, '
                           'camera C reads C/depth/image and C/depth/camera_info (remap those)')
    if images and len(images) != len(cameras):
        raise RuntimeError(f'images names {len(images)} topics for {len(cameras)} cameras '
                           f'({", ".join(cameras)}): give one topic per camera, in their order')
    remappings = []
    for camera, topic in zip(cameras, images):
        remappings += [(f'{camera}/image', topic),
                       (f'{camera}/image/compressed', f'{topic}/compressed')]
    return cameras, remappings


def rviz2_installed():
    """Return whether the ament index has rviz2 and its executable, where launch_ros looks."""
    try:
        prefix = get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return os.access(os.path.join(prefix, 'lib', 'rviz2', 'rviz2'), os.X_OK)


def rviz(configurations, cameras):
    """Return rviz2 on the (first) camera's topics, or nothing and a warning without rviz2."""
    if not rviz2_installed():
        LOGGER.warning('rviz:=true, but rviz2 is not installed (no rviz2 in the ament index): '
                       'running without rviz')
        return []
    parts = [configurations['namespace'], *cameras[:1]]
    sim_time = configurations['use_sim_time']
    parameters = [{'use_sim_time': sim_time == 'true'}] if sim_time else []
    return [Node(package='rviz2', executable='rviz2', output='screen',
                 namespace='/'.join(part.strip('/') for part in parts if part.strip('/')),
                 arguments=['-d', str(CONFIG / 'segtrack.rviz')], parameters=parameters,
                 ros_arguments=['--log-level', configurations['log_level']])]


def segtrack_node(context):
    """Return segtrack_node, the handlers that end the launch with it, and rviz if asked."""
    configurations = context.launch_configurations
    params_file = configurations['params_file']
    if params_file and not os.path.isfile(params_file):
        raise RuntimeError(f'params_file {params_file} not found')
    cameras, remappings = camera_remappings(configurations)
    given = given_parameters(configurations)
    if cameras:
        given['cameras'] = ParameterValue(cameras, value_type=List[str])
    parameters = [params_file] if params_file else []
    if given:
        parameters.append(given)  # after the file: given arguments win
    node = Node(package='segtrack_ros', executable='segtrack_node', name='segtrack_node',
                namespace=configurations['namespace'], output='screen', emulate_tty=True,
                parameters=parameters, remappings=remappings,
                ros_arguments=['--log-level', configurations['log_level']])
    actions = [node, *end_launch_on_exit(node, 'segtrack_node')]
    if configurations['rviz'] == 'true':
        actions += rviz(configurations, cameras)
    return actions


def generate_launch_description():
    """Declare the arguments, check the given ones, start the node (and rviz)."""
    arguments = launch_arguments()
    return LaunchDescription([
        warn_about_undeclared(LAUNCH_FILE.name, argument_names(arguments)),
        *arguments,
        OpaqueFunction(function=segtrack_node),
    ])

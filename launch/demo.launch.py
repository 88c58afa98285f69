"""
Demo: video_publisher plays a video into segtrack_node, optionally shown in rviz.

    make demo                                     # once, in the checkout: the sample video
    ros2 launch segtrack_ros demo.launch.py       # from the checkout: plays that sample
    ros2 launch segtrack_ros demo.launch.py source:=/path/to/video.avi mode:=predict

The default `source` is output/sample-300.avi under the current directory, where `make demo`
writes it (a launch file cannot generate it): when the file is missing, the launch stops at once
and says how to get it. `source:=0` plays camera 0. The node runs the bundled model
(shapes-seg.pt) unless `model` or `params_file` is given; otherwise the node's arguments are
those of segtrack.launch.py, with the same precedence (a given argument over params_file over
the defaults). The launch ends when either process ends: with exit code 0 after a video played
once (loop:=false), non-zero when one of them fails.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description_sources import load_python_launch_file_as_module
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

LAUNCH_FILE = Path(__file__).resolve()
SEGTRACK = LAUNCH_FILE.with_name('segtrack.launch.py')
SAMPLE = 'output/sample-300.avi'
BUNDLED_MODEL = 'shapes-seg.pt'
# segtrack.launch.py's arguments that the demo declares itself (model, params_file) or leaves
# out: video_publisher is one camera of raw images.
LEFT_OUT = ('cameras', 'images', 'input_transport', 'params_file', 'model')
segtrack = load_python_launch_file_as_module(str(SEGTRACK))


def demo_arguments():
    """Return the publisher's arguments, segtrack.launch.py's and the demo's model/params_file."""
    return [
        DeclareLaunchArgument('source', default_value=SAMPLE,
                              description='video file or camera index; default: the sample '
                                          'that `make demo` writes in the checkout'),
        DeclareLaunchArgument('rate', default_value='0.0',
                              description='frames per second, 0 = the video file fps'),
        DeclareLaunchArgument('loop', default_value='true', choices=list(segtrack.BOOLEAN),
                              description='play the file again at its end'),
        DeclareLaunchArgument('model', default_value='',
                              description='model file, OpenVINO folder or official name '
                                          f"('' = {BUNDLED_MODEL}, the bundled one, unless "
                                          'params_file is given)'),
        DeclareLaunchArgument('params_file', default_value='',
                              description=f'{segtrack.PARAMS_FILE_DESCRIPTION} '
                                          "('' = config/segtrack.yaml)"),
        *segtrack.launch_arguments(leave_out=LEFT_OUT),
    ]


def source_path(source):
    """Return `source` as the publisher takes it: a camera index, or an existing file."""
    if source.isdigit():
        return source
    path = Path(source).resolve()
    if path.is_file():
        return str(path)
    if source == SAMPLE:
        raise RuntimeError(f'no sample video at {path}: run `make demo` once in the segtrack_ros '
                           'checkout and launch from there, or give source:=VIDEO '
                           '(source:=0 for a camera)')
    raise RuntimeError(f'source {source} not found (give a video file, or a camera index)')


def demo(context, segtrack_names):
    """Return video_publisher with its exit handlers, and segtrack.launch.py's node."""
    configurations = context.launch_configurations
    source = source_path(configurations['source'])
    rate = configurations['rate']
    try:
        rate = float(rate)
    except ValueError:
        raise RuntimeError(f'rate must be frames per second, got {rate!r}') from None
    parameters = {'source': ParameterValue(source, value_type=str), 'rate': rate,
                  'loop': configurations['loop'] == 'true'}
    if configurations['use_sim_time']:
        parameters['use_sim_time'] = configurations['use_sim_time'] == 'true'
    publisher = Node(package='segtrack_ros', executable='video_publisher', output='screen',
                     namespace=configurations['namespace'], parameters=[parameters],
                     remappings=[('image', configurations['image'])],
                     ros_arguments=['--log-level', configurations['log_level']])
    node_arguments = {name: configurations[name] for name in segtrack_names}
    if not configurations['params_file']:
        node_arguments['params_file'] = str(segtrack.CONFIG / 'segtrack.yaml')
        node_arguments['model'] = configurations['model'] or BUNDLED_MODEL
    return [publisher, *segtrack.end_launch_on_exit(publisher, 'video_publisher'),
            segtrack.scoped_include(SEGTRACK, node_arguments)]


def generate_launch_description():
    """Declare the arguments, check the given ones, start the publisher and the node."""
    arguments = demo_arguments()
    names = segtrack.argument_names(arguments)
    segtrack_names = [name for name in names
                      if name in segtrack.argument_names(segtrack.launch_arguments())]
    return LaunchDescription([
        segtrack.warn_about_undeclared(LAUNCH_FILE.name, names),
        *arguments,
        OpaqueFunction(function=demo, args=[segtrack_names]),
    ])

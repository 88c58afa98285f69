"""
Launch segtrack_node on one camera topic, optionally with rviz.

    ros2 launch segtrack_ros segtrack.launch.py image:=/camera/image_raw device:=cuda:0 \
        mode:=track color_mode:=track

Several cameras: include this file once per camera with its own `namespace` and `image`
(see launch/multi_camera.launch.py).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

CONFIG = PathJoinSubstitution([FindPackageShare('segtrack_ros'), 'config'])

# Launch arguments that set string node parameters of the same name, over the params file.
NODE_PARAMETER_ARGUMENTS = (
    ('device', 'auto', 'auto, cpu, cuda, cuda:N, N or mps'),
    ('mode', 'track', 'predict or track'),
    ('color_mode', 'class', 'class or track (track needs mode track)'),
    ('model', 'yolov8n-seg.pt', 'model file, OpenVINO folder or official name'),
)


def generate_launch_description():
    """Declare the arguments, the node and the optional rviz."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, default, description in NODE_PARAMETER_ARGUMENTS]
    arguments += [
        DeclareLaunchArgument('image', default_value='image',
                              description='input image topic (raw; /compressed is appended '
                                          'for input_transport compressed)'),
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([CONFIG, 'segtrack.yaml']),
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('rviz', default_value='false', description='start rviz2'),
    ]
    image = LaunchConfiguration('image')
    node = Node(
        package='segtrack_ros', executable='segtrack_node', name='segtrack_node',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'),
                    {name: ParameterValue(LaunchConfiguration(name), value_type=str)
                     for name, _, _ in NODE_PARAMETER_ARGUMENTS}],
        remappings=[('image', image), ('image/compressed', [image, '/compressed'])])
    rviz = Node(
        package='rviz2', executable='rviz2', namespace=LaunchConfiguration('namespace'),
        arguments=['-d', PathJoinSubstitution([CONFIG, 'segtrack.rviz'])],
        condition=IfCondition(LaunchConfiguration('rviz')))
    return LaunchDescription([*arguments, node, rviz])

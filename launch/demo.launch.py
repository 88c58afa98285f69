"""
Demo: video_publisher plays a video into segtrack_node, optionally shown in rviz.

    ros2 launch segtrack_ros demo.launch.py source:=/path/to/video.avi model:=shapes-seg.pt
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    """Declare the arguments; start the publisher and include segtrack.launch.py."""
    arguments = [
        DeclareLaunchArgument('source', default_value='0',
                              description='video file or camera index'),
        DeclareLaunchArgument('rate', default_value='0.0',
                              description='frames per second, 0 = the video file fps'),
        DeclareLaunchArgument('loop', default_value='true',
                              description='play the file again at its end'),
        DeclareLaunchArgument('model', default_value='shapes-seg.pt',
                              description='model (default: the bundled shapes model)'),
        DeclareLaunchArgument('device', default_value='auto'),
        DeclareLaunchArgument('mode', default_value='track'),
        DeclareLaunchArgument('color_mode', default_value='track'),
        DeclareLaunchArgument('rviz', default_value='false'),
    ]
    publisher = Node(
        package='segtrack_ros', executable='video_publisher', output='screen',
        parameters=[{'source': ParameterValue(LaunchConfiguration('source'), value_type=str),
                     'rate': ParameterValue(LaunchConfiguration('rate'), value_type=float),
                     'loop': ParameterValue(LaunchConfiguration('loop'), value_type=bool)}])
    segtrack = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution(
            [FindPackageShare('segtrack_ros'), 'launch', 'segtrack.launch.py'])),
        launch_arguments={name: LaunchConfiguration(name)
                          for name in ('model', 'device', 'mode', 'color_mode', 'rviz')}.items())
    return LaunchDescription([*arguments, publisher, segtrack])

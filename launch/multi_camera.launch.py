"""
Two cameras, one segtrack_node each: namespaces keep their topics and tracks apart.

    ros2 launch segtrack_ros multi_camera.launch.py

Topics: /front/annotated_image, /front/instance_mask, ... and /rear/... . Edit CAMERAS for yours.
"""

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

CAMERAS = (('front', '/front_camera/image_raw'), ('rear', '/rear_camera/image_raw'))


def generate_launch_description():
    """Include segtrack.launch.py once per camera."""
    segtrack = PathJoinSubstitution(
        [FindPackageShare('segtrack_ros'), 'launch', 'segtrack.launch.py'])
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(segtrack),
                                 launch_arguments={'namespace': name, 'image': topic}.items())
        for name, topic in CAMERAS])

"""
The Fast DDS profile that segtrack_node applies to itself (config/fastdds_large_data.xml).

Fast DDS drops a profile file with one bad element whole, saying so in a log line only: large
images and service answers would then fall back to its defaults without anything failing.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

from segtrack_ros.ros.transport import (apply_large_data_profile, profile_path,
                                        PROFILE_VARIABLES)

FAST_DDS = {'dds': 'http://www.eprosima.com'}

# A node with a service and a publisher, the endpoints the profile configures.
NODE = r"""
import rclpy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger
rclpy.init()
node = rclpy.create_node('profile_check')
node.create_service(Trigger, 'check', lambda request, response: response)
node.create_publisher(Image, 'image', 2)
print('node made')
node.destroy_node()
rclpy.try_shutdown()
"""


def test_fast_dds_reads_the_profile_without_an_error():
    environ = {name: value for name, value in os.environ.items()
               if name not in PROFILE_VARIABLES}
    assert apply_large_data_profile(environ) == profile_path()
    result = subprocess.run([sys.executable, '-c', NODE], env=environ, capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and 'node made' in output, output
    assert 'XMLPARSER' not in output and 'Error' not in output, output


def test_service_answers_wait_seconds_for_their_caller():
    """
    Fast DDS gives every service's response writer the `service` profile.

    Its max_blocking_time is how long a response waits for the caller's response reader to be
    matched before it is dropped: 100 ms by default, which lost answers of a just-started node.
    """
    profiles = ElementTree.parse(profile_path()).getroot()
    blocking = profiles.find("dds:profiles/dds:data_writer[@profile_name='service']/dds:qos/"
                             'dds:reliability/dds:max_blocking_time', FAST_DDS)
    assert blocking is not None
    seconds = (int(blocking.findtext('dds:sec', '0', FAST_DDS))
               + int(blocking.findtext('dds:nanosec', '0', FAST_DDS)) / 1e9)
    assert seconds >= 2.0


def test_a_profile_or_middleware_of_the_users_own_is_left_alone():
    for users in ({'FASTDDS_DEFAULT_PROFILES_FILE': '/mine.xml'},
                  {'FASTRTPS_DEFAULT_PROFILES_FILE': '/mine.xml'},
                  {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}):
        environ = dict(users)
        assert apply_large_data_profile(environ) is None
        assert environ == users
    jazzy = {'ROS_DISTRO': 'jazzy'}  # Fast DDS 2 reads the older variable
    assert apply_large_data_profile(jazzy) == profile_path()
    assert jazzy == {'ROS_DISTRO': 'jazzy', 'FASTRTPS_DEFAULT_PROFILES_FILE': str(profile_path())}

"""
The Fast DDS profile the node applies to itself, for large images and service answers.

Fast DDS's default transports lose every large image on the way to a best-effort subscriber in
another process; the profile in `config/fastdds_large_data.xml` (shared memory with a 32 MB
segment, plus UDPv4) fixes that from the publishing side alone. It also lets a service response
wait 5 s instead of 100 ms for its caller to be discovered, so that a parameter or lifecycle call
to a node that has just started is answered late rather than never. It is applied only when Fast
DDS is the middleware and the user has not chosen a profile of their own.
"""

import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory, PackageNotFoundError

PROFILE_NAME = 'fastdds_large_data.xml'
# Fast DDS 3 (Kilted) reads the first, Fast DDS 2 (Humble, Jazzy) the second.
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
FASTDDS_RMW = 'rmw_fastrtps_cpp'


def profile_path():
    """Return the installed profile (share/segtrack_ros/config), else a source checkout's."""
    try:
        installed = Path(get_package_share_directory('segtrack_ros')) / 'config' / PROFILE_NAME
        if installed.is_file():
            return installed
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (pip install)
        pass
    return Path(__file__).resolve().parents[2] / 'config' / PROFILE_NAME


def apply_large_data_profile(environ=os.environ):
    """
    Point Fast DDS at the large-data profile, unless the user set a profile or another RMW.

    Must run before `rclpy.init()`. Returns the profile path used, or None when left alone.
    """
    if environ.get('RMW_IMPLEMENTATION', FASTDDS_RMW) != FASTDDS_RMW:
        return None
    if any(environ.get(name) for name in PROFILE_VARIABLES):
        return None
    path = profile_path()
    if not path.is_file():
        return None
    fast_dds_2 = environ.get('ROS_DISTRO') in ('humble', 'iron', 'jazzy')
    environ[PROFILE_VARIABLES[1] if fast_dds_2 else PROFILE_VARIABLES[0]] = str(path)
    return path

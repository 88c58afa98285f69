"""
Several cameras, one segtrack_node: one model, each camera's topics and tracks apart.

    ros2 launch segtrack_ros multi_camera.launch.py model:=shapes-seg.pt

reads /front_camera/image_raw and /rear_camera/image_raw and publishes /front/annotated_image,
/front/instance_mask, ... and /rear/... (shapes-seg.pt is the bundled model, so this runs offline;
the node's default yolov8n-seg.pt needs a local file or a connection). Your cameras:

    ros2 launch segtrack_ros multi_camera.launch.py model:=/path/to/model.pt \
        cameras:=left,right images:=/left/image_raw,/right/image_raw namespace:=perception

With `export_format:=engine` (or `openvino` on a CPU) the node exports the model once for a batch
of all its cameras (dynamic: a batch with fewer frames is not padded) and runs the export.

The arguments are segtrack.launch.py's (with the same precedence over params_file), with these
cameras by default; segtrack.launch.py is included with exactly them, so nothing leaks out.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.launch_description_sources import load_python_launch_file_as_module
from launch.substitutions import LaunchConfiguration

LAUNCH_FILE = Path(__file__).resolve()
SEGTRACK = LAUNCH_FILE.with_name('segtrack.launch.py')
CAMERAS = {'cameras': 'front,rear', 'images': '/front_camera/image_raw,/rear_camera/image_raw'}


def generate_launch_description():
    """Declare segtrack.launch.py's arguments with these cameras; include it with them."""
    segtrack = load_python_launch_file_as_module(str(SEGTRACK))
    arguments = segtrack.launch_arguments(CAMERAS, leave_out=('image',))
    names = segtrack.argument_names(arguments)
    return LaunchDescription([
        segtrack.warn_about_undeclared(LAUNCH_FILE.name, names),
        *arguments,
        segtrack.scoped_include(SEGTRACK, {name: LaunchConfiguration(name) for name in names}),
    ])

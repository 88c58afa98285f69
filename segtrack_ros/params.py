"""
The node's parameters, written once: name, default, description, allowed values or range.

The node declares them from `PARAMETERS`, `config/segtrack.yaml` is generated from it
(`python -m segtrack_ros.params > config/segtrack.yaml`) and a test checks that the YAML, the
README and the launch files agree with it. Imports no rclpy, torch or ultralytics, so tools can
read it anywhere, fast.
"""

from dataclasses import dataclass
import re

from segtrack_ros.core.exports import FORMATS
from segtrack_ros.core.render import COLOR_MODES
from segtrack_ros.core.segmenter import MODES
from segtrack_ros.core.tracking import DEFAULT_TRACKER
from segtrack_ros.io.image_codec import DEFAULT_MAX_PIXELS

INPUT_TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable')
CAMERA_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')


@dataclass(frozen=True)
class ParameterSpec:
    """
    One parameter: its default, what it does, what values it takes.

    `fixed` ones shape the pipeline (model, device, topics): they can be set while the node is
    unconfigured and are refused while it is configured. `step` makes integers multiples of it.
    `flag` is its command-line flag in `segtrack-video` and `segtrack-bag` (`cli/common.py`
    makes the flag from the entry); None keeps it off their command lines.
    """

    name: str
    default: object
    description: str
    choices: tuple = ()
    low: float = None
    high: float = None
    step: int = None
    fixed: bool = False
    flag: str = None

    def check(self, value):
        """Return why `value` is refused, or None when it is allowed."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}, got {value!r}'
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)):
                return f'{self.name} must be a list, got {value!r}'
            item_type = int if self.low is not None else str
            if any(type(item) is not item_type for item in value):
                return f'{self.name} must be a list of {item_type.__name__}s, got {value!r}'
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if self.low is not None and not self.low <= item <= self.high:
                return f'{self.name} must be within [{self.low}, {self.high}], got {item!r}'
            if self.step and (item - self.low) % self.step:
                return f'{self.name} must be a multiple of {self.step}, got {item!r}'
        return None


PARAMETERS = (
    ParameterSpec('model', 'yolov8n-seg.pt',
                  'Model: .pt/.onnx/.engine file, OpenVINO folder, or an official name (fetched '
                  'by ultralytics when online). .pt files are pickles: load only trusted weights.',
                  fixed=True, flag='--model'),
    ParameterSpec('device', 'auto',
                  'auto (first CUDA GPU, else CPU), cpu, cuda, cuda:N, N or mps.', fixed=True,
                  flag='--device'),
    ParameterSpec('mode', 'track', 'predict (segmentation) or track (segmentation + tracking).',
                  choices=MODES, flag='--mode'),
    ParameterSpec('color_mode', 'class',
                  'Colour and label instances by class, or by track id (needs mode track).',
                  choices=COLOR_MODES, flag='--color-by'),
    ParameterSpec('tracker', DEFAULT_TRACKER,
                  f'Tracker config: {DEFAULT_TRACKER} (bundled: TrackTrack with ReID), '
                  'tracktrack.yaml, bytetrack.yaml, botsort.yaml, ... or a path. '
                  'Changing it resets the tracks.', flag='--tracker'),
    ParameterSpec('conf', 0.25, 'Confidence threshold.', low=0.0, high=1.0, flag='--conf'),
    ParameterSpec('iou', 0.7, 'NMS IoU threshold.', low=0.0, high=1.0, flag='--iou'),
    ParameterSpec('imgsz', 640, 'Inference size in pixels (a multiple of 32).', low=32,
                  high=4096, step=32, flag='--imgsz'),
    ParameterSpec('half', False,
                  "Half precision: FP16 on CUDA; an OpenVINO model runs in the CPU's fast "
                  'precision (bf16 where it has it) instead of f32. No effect on a .pt on the '
                  'CPU.',
                  fixed=True, flag='--half'),
    ParameterSpec('export_format', '',
                  'Export model (a .pt) on this machine for the imgsz, half, cameras and device '
                  'given, once (kept in export_dir), and run the export: onnx, openvino (CPU), '
                  'engine (TensorRT, CUDA), torchscript. Empty runs model as it is.',
                  choices=('', *FORMATS), fixed=True, flag='--export-format'),
    ParameterSpec('export_dir', '',
                  'Folder the exports are kept in. Empty: $ROS_HOME/segtrack_ros/exports when '
                  'ROS_HOME is set, else ~/.cache/segtrack_ros/exports.', fixed=True,
                  flag='--export-dir'),
    ParameterSpec('max_det', 300, 'Most instances per frame.', low=1, high=1000,
                  flag='--max-det'),
    ParameterSpec('classes', [], 'Class ids to keep; empty keeps all.', low=0, high=65534,
                  flag='--classes'),
    ParameterSpec('retina_masks', False,
                  'Masks at full input resolution from the model (sharper, slower).'),
    ParameterSpec('line_width', 0, 'Outline width in pixels; 0 picks one from the image size.',
                  low=0, high=50),
    ParameterSpec('show_labels', True, 'Draw a label (class name or track id) at each mask.'),
    ParameterSpec('show_conf', False, 'Add the confidence to each label.'),
    ParameterSpec('mask_alpha', 0.3, 'Opacity of the mask fill; 0 draws outlines only.',
                  low=0.0, high=1.0, flag='--mask-alpha'),
    ParameterSpec('trail_length', 0, 'Track trails of this many frames; 0 = no trails.',
                  low=0, high=1000, flag='--trail-length'),
    ParameterSpec('input_transport', 'raw',
                  'raw: subscribe image (sensor_msgs/Image); compressed: image/compressed.',
                  choices=INPUT_TRANSPORTS, fixed=True),
    ParameterSpec('qos_reliability', 'best_effort',
                  'Reliability of the image subscription (sensor-data QoS otherwise); its '
                  'qos_overrides take history and depth, this alone decides reliability.',
                  choices=RELIABILITIES, fixed=True),
    ParameterSpec('max_input_pixels', DEFAULT_MAX_PIXELS,
                  'Larger input images (width x height, raw or as declared by a JPEG/PNG '
                  'header) are bad inputs, skipped before decoding.', low=1, high=2**31 - 1),
    ParameterSpec('cameras', [],
                  'Camera names; camera C reads C/image and publishes C/annotated_image, ... '
                  'Empty: one camera on image.', fixed=True),
    ParameterSpec('depth', False,
                  '3D from a depth camera: read depth/image (16UC1/mono16 in mm or 32FC1 in m, '
                  'registered to the colour image) and depth/camera_info; publish detections_3d, '
                  'markers and points.', fixed=True),
    ParameterSpec('depth_tolerance', 0.02,
                  'Largest stamp difference (s) between a colour frame and the depth image '
                  'paired with it; a frame without one gets no 3D outputs.', low=0.0, high=1.0),
    ParameterSpec('autostart', True,
                  'Configure and activate at start; false waits, unconfigured, for a lifecycle '
                  'manager.'),
)

BY_NAME = {spec.name: spec for spec in PARAMETERS}


def check_combination(values):
    """Return why a full set of parameter values contradicts itself, or None."""
    if values['color_mode'] == 'track' and values['mode'] != 'track':
        return 'color_mode track needs mode track (predict mode has no track ids)'
    cameras = values['cameras']
    for name in cameras:
        if not CAMERA_NAME.fullmatch(name):
            return (f'cameras: {name!r} is not a relative topic name (letters, digits, _ and /, '
                    'starting with a letter)')
    if len(set(cameras)) != len(cameras):
        return f'cameras: each name once, got {cameras}'
    return None


def yaml_text():
    """`config/segtrack.yaml`: every parameter with its default and a comment."""
    lines = ['# segtrack_node parameters: every one, with its default. Generated from',
             '# segtrack_ros/params.py (python -m segtrack_ros.params > config/segtrack.yaml).',
             '/**:', '  ros__parameters:']
    for spec in PARAMETERS:
        lines.append(f'    # {spec.description}'
                     + (' Read-only while configured.' if spec.fixed else ''))
        lines.append(f'    {spec.name}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


if __name__ == '__main__':
    print(yaml_text(), end='')

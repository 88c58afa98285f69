"""
segtrack_node with `export_format` over real DDS.

The node exports the bundled model to OpenVINO in its configure, runs the export and publishes
what the `.pt` finds on the same frame; a second start takes the export from the cache. A model
exported at a fixed size is run at that size, said in the log, and `imgsz` cannot change under it.
"""

import signal
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_harness import NodeProcess, RELIABLE, running_probe, wait_until
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.io import image_codec
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

pytest.importorskip('openvino', reason='pip install -r requirements-dev.txt')

NAMESPACE = '/exported'
TIMEOUT = 120.0  # an export in the node's configure, on a loaded machine
SETTINGS = {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'imgsz': 320, 'mode': 'predict'}


def boxes_of(message):
    """Return the class names and x1 y1 x2 y2 boxes of a Detection2DArray."""
    names = [detection.results[0].hypothesis.class_id for detection in message.detections]
    boxes = np.array([[d.bbox.center.position.x - d.bbox.size_x / 2,
                       d.bbox.center.position.y - d.bbox.size_y / 2,
                       d.bbox.center.position.x + d.bbox.size_x / 2,
                       d.bbox.center.position.y + d.bbox.size_y / 2]
                      for d in message.detections]).reshape(-1, 4)
    return names, boxes


def answer(probe, publisher, collector, frame):
    """Publish `frame` until the node answers it (discovery may drop the first); return that."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        header = probe.header()
        publisher.publish(image_codec.to_image_msg(frame, 'bgr8', header))
        stop = time.monotonic() + 2.0
        while time.monotonic() < stop:
            found = collector.by_stamp(header.stamp)
            if found:
                return found[0]
            time.sleep(0.05)
    raise AssertionError('the node never answered')


def test_the_node_exports_runs_and_reuses_its_export(tmp_path):
    """First start: exported, same instances as the .pt; second start: from the cache."""
    frame, _ = render_frame(build_scene(SceneConfig(frames=2, seed=11)), 0)
    expected = Segmenter(SegmenterConfig(**SETTINGS)).process(frame)
    assert len(expected) >= 2
    parameters = {**SETTINGS, 'export_format': 'openvino', 'export_dir': str(tmp_path)}
    with running_probe('export_test') as probe:
        collector = probe.collect(Detection2DArray, f'{NAMESPACE}/detections')
        publisher = probe.publisher(Image, f'{NAMESPACE}/image', RELIABLE)
        for said in ('exported in', 'found in the cache'):
            process = NodeProcess('segtrack_node', parameters, NAMESPACE)
            try:
                names, boxes = boxes_of(answer(probe, publisher, collector, frame))
                assert said in process.output, process.output
                assert sorted(names) == sorted(expected.class_names)
                for box in expected.boxes:
                    assert np.abs(boxes - box).max(axis=1).min() <= 1.0, (box, boxes)
            finally:
                code, _ = process.stop(signal.SIGINT)
            assert code == 0 and 'Traceback' not in process.output, process.output
    assert len(list(tmp_path.glob('*_openvino_model'))) == 1


def test_a_fixed_size_export_keeps_its_size_and_imgsz_cannot_change(tmp_path):
    """A 320 export given imgsz 640: one log line; setting imgsz is refused with the fix."""
    from ultralytics import YOLO

    source = tmp_path / 'fixed.pt'
    source.write_bytes(BUNDLED_MODEL.read_bytes())
    onnx = YOLO(str(source)).export(format='onnx', imgsz=320, dynamic=False, verbose=False)
    frame, _ = render_frame(build_scene(SceneConfig(frames=2, seed=11)), 0)
    parameters = {**SETTINGS, 'model': onnx, 'imgsz': 640}
    with running_probe('fixed_size_test') as probe:
        collector = probe.collect(Detection2DArray, f'{NAMESPACE}/detections')
        publisher = probe.publisher(Image, f'{NAMESPACE}/image', RELIABLE)
        process = NodeProcess('segtrack_node', parameters, NAMESPACE)
        try:
            assert answer(probe, publisher, collector, frame).detections
            assert 'fixed at export): imgsz 640 is not used' in process.output, process.output
            client = AsyncParameterClient(probe.node, f'{NAMESPACE}/segtrack_node')
            assert client.wait_for_services(timeout_sec=TIMEOUT)
            future = client.set_parameters([Parameter('imgsz', value=480)])
            assert wait_until(future.done)
            result = future.result().results[0]
            assert not result.successful and 'fixed at export' in result.reason, result.reason
        finally:
            code, _ = process.stop(signal.SIGINT)
        assert code == 0 and 'Traceback' not in process.output, process.output

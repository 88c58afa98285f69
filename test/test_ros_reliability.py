"""
segtrack_node under bad inputs and faults: it never crashes, says what is wrong, and goes on.

The long load runs are in `make soak`; here are the short versions.
"""

import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

from conftest import UNTRAINED_CONF, write_test_video
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.serialization import serialize_message
from ros_harness import BIN, make_frame, NodeProcess, running_probe, wait_until
from segtrack_ros.cli.video import main as video_main
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from segtrack_ros.core.stats import WINDOW_SECONDS
from segtrack_ros.eval.synthetic import build_scene, render_frame, SceneConfig
from segtrack_ros.io import image_codec
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2DArray

TIMEOUT = 60.0


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node."""
    with running_probe('reliability_test') as node:
        yield node


def start_node(probe, untrained_weights, namespace, environment=None, **parameters):
    """Start a segtrack_node in predict mode on the untrained weights; wait for it."""
    process = NodeProcess('segtrack_node', {
        'model': untrained_weights, 'device': 'cpu', 'conf': UNTRAINED_CONF, 'imgsz': 320,
        'max_det': 4, 'mode': 'predict', **parameters}, namespace, environment)
    topic = (f'{namespace}/image/compressed'
             if parameters.get('input_transport') == 'compressed' else f'{namespace}/image')
    assert probe.wait_for_graph(lambda node: node.count_subscribers(topic) > 0, TIMEOUT), \
        process.output
    return process


def diagnostic_value(diagnostics, namespace, key):
    """Return the node's latest count `key` in /diagnostics, or -1 before the first one."""
    for array in reversed(diagnostics.messages):
        for status in array.status:
            if status.name.startswith(f'{namespace}/segtrack_node'):
                return int(next(v.value for v in status.values if v.key == key))
    return -1


def diagnostic_level(diagnostics, namespace):
    """Return the level of the node's latest /diagnostics status, or None before the first."""
    for array in reversed(diagnostics.messages):
        for status in array.status:
            if status.name.startswith(f'{namespace}/segtrack_node'):
                return status.level
    return None


def raw_message(probe, frame=None, **fields):
    """Return a valid bgr8 message of a small frame, with `fields` overwritten."""
    message = image_codec.to_image_msg(
        make_frame(0, 64, 48) if frame is None else frame, 'bgr8', probe.header())
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def gray_message(probe, encoding, values, big_endian=False):
    """Return a single-channel message of `values` (2-D numpy) in `encoding`."""
    data = values.astype(values.dtype.newbyteorder('>' if big_endian else '<')).tobytes()
    return Image(header=probe.header(), height=values.shape[0], width=values.shape[1],
                 encoding=encoding, is_bigendian=int(big_endian),
                 step=values.shape[1] * values.itemsize, data=data)


def bad_raw_messages(probe):
    """Return Image messages the node must refuse, by the problem each one has."""
    frame = make_frame(1, 64, 48)
    good = image_codec.to_image_msg(frame, 'bgr8', probe.header())
    return {
        'unknown encoding': raw_message(probe, encoding='bgr9'),
        'empty encoding': raw_message(probe, encoding=''),
        'width 0': raw_message(probe, width=0),
        'height 0': raw_message(probe, height=0),
        'data too short': raw_message(probe, data=bytes(good.data)[:-10]),
        'data too long': raw_message(probe, data=bytes(good.data) + bytes(10)),
        'step smaller than a row': raw_message(probe, step=10),
        'huge size, little data': raw_message(probe, width=100000, height=100000,
                                              step=300000),
    }


def odd_but_valid_messages(probe):
    """Return messages that look strange but are valid: the node must process them."""
    frame = make_frame(2, 64, 48)
    padded = np.zeros((48, 64 * 3 + 5), np.uint8)
    padded[:, :64 * 3] = frame.reshape(48, -1)
    floats = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    floats[0, :5] = [np.nan, np.inf, -np.inf, np.nan, 1e30]
    return {
        'odd row padding': Image(header=probe.header(), height=48, width=64, encoding='bgr8',
                                 step=64 * 3 + 5, data=padded.tobytes()),
        'big-endian mono16': gray_message(
            probe, 'mono16', np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20, True),
        'float with NaN and inf': gray_message(probe, '32FC1', floats),
    }


def bad_compressed_messages(probe):
    """Return CompressedImage messages the node must refuse."""
    import cv2

    _, jpeg = cv2.imencode('.jpg', make_frame(3, 64, 48))
    _, png = cv2.imencode('.png', make_frame(3, 64, 48))
    return {
        'empty jpeg': CompressedImage(header=probe.header(), format='jpeg', data=b''),
        'corrupt jpeg': CompressedImage(header=probe.header(), format='jpeg',
                                        data=bytes(range(256)) * 4),
        'truncated jpeg': CompressedImage(header=probe.header(), format='jpeg',
                                          data=jpeg.tobytes()[:len(jpeg) // 2]),
        'truncated png': CompressedImage(header=probe.header(), format='png',
                                         data=png.tobytes()[:len(png) // 2]),
        'unknown format': CompressedImage(header=probe.header(), format='webp',
                                          data=jpeg.tobytes()),
    }


def send_each_and_check(probe, publisher, messages, namespace, good):
    """Send each bad message; each is counted, and a good message after it is processed."""
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    detections = probe.collect(Detection2DArray, f'{namespace}/detections')

    def bad_inputs():
        return diagnostic_value(diagnostics, namespace, 'bad_inputs')

    assert wait_until(lambda: bad_inputs() == 0)
    for count, (problem, message) in enumerate(messages.items(), start=1):
        message.header = probe.header()
        publisher.publish(message)
        assert wait_until(lambda: bad_inputs() >= count), problem
        after = good()
        publisher.publish(after)
        assert wait_until(lambda: detections.by_stamp(after.header.stamp)), problem
    assert bad_inputs() == len(messages)


def test_bad_raw_images_are_skipped_counted_and_logged(probe, untrained_weights):
    """Every malformed Image is refused with a warning; valid odd ones are processed."""
    namespace = '/bad_raw'
    process = start_node(probe, untrained_weights, namespace)
    try:
        publisher = probe.publisher(Image, f'{namespace}/image')
        send_each_and_check(probe, publisher, bad_raw_messages(probe), namespace,
                            lambda: raw_message(probe))
        detections = probe.collect(Detection2DArray, f'{namespace}/detections')
        for problem, message in odd_but_valid_messages(probe).items():
            message.header = probe.header()
            publisher.publish(message)
            assert wait_until(lambda: detections.by_stamp(message.header.stamp)), problem
        assert 'bad input image skipped' in process.output
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output


def test_bad_compressed_images_are_skipped_and_counted(probe, untrained_weights):
    """Empty, corrupt and truncated JPEG/PNG and unknown formats are refused; JPEG works."""
    import cv2

    namespace = '/bad_compressed'
    process = start_node(probe, untrained_weights, namespace, input_transport='compressed')
    try:
        publisher = probe.publisher(CompressedImage, f'{namespace}/image/compressed')
        _, jpeg = cv2.imencode('.jpg', make_frame(4, 64, 48))
        send_each_and_check(
            probe, publisher, bad_compressed_messages(probe), namespace,
            lambda: CompressedImage(header=probe.header(), format='jpeg', data=jpeg.tobytes()))
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output


def test_failure_on_one_frame_is_logged_counted_and_passed(probe, untrained_weights):
    """
    A frame that breaks one output (JPEG stops at 65500 px) is an error line and a count.

    A real fault through the real node, with nothing mocked: the frame is decoded and segmented,
    its compressed image cannot be encoded; the frames before and after it are served in full.
    """
    namespace = '/publish_fault'
    process = start_node(probe, untrained_weights, namespace)
    try:
        publisher = probe.publisher(Image, f'{namespace}/image')
        compressed = probe.collect(CompressedImage, f'{namespace}/annotated_image/compressed')
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        assert probe.wait_for_graph(
            lambda node: node.count_subscribers(f'{namespace}/annotated_image/compressed') > 0,
            TIMEOUT)

        def served(message):
            publisher.publish(message)
            return wait_until(lambda: compressed.by_stamp(message.header.stamp))

        assert wait_until(lambda: served(raw_message(probe)))
        publisher.publish(image_codec.to_image_msg(np.zeros((8, 66000, 3), np.uint8), 'bgr8',
                                                   probe.header()))
        assert wait_until(lambda: diagnostic_value(diagnostics, namespace, 'errors') == 1)
        assert served(raw_message(probe))
        assert 'drawing or encoding failed on a frame' in process.output
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output


def test_publisher_pause_and_node_restart(probe, untrained_weights, tmp_path):
    """The outputs resume when the publisher pauses, and when the node restarts under it."""
    namespace = '/restart'
    video = write_test_video(tmp_path / 'loop.avi', frames=20)
    publisher = NodeProcess('video_publisher', {'source': str(video), 'rate': 10.0,
                                                'loop': True}, namespace)
    masks = probe.collect(Image, f'{namespace}/instance_mask')
    node = start_node(probe, untrained_weights, namespace)
    try:
        assert wait_until(lambda: len(masks.messages) >= 3), node.output + publisher.output
        publisher.process.send_signal(signal.SIGSTOP)  # the camera freezes ...
        time.sleep(2.0)
        paused_at = len(masks.messages)
        publisher.process.send_signal(signal.SIGCONT)  # ... and comes back
        assert wait_until(lambda: len(masks.messages) >= paused_at + 3), node.output

        code, _ = node.stop()
        assert code == 0, node.output
        stopped_at = len(masks.messages)
        node = start_node(probe, untrained_weights, namespace)
        assert wait_until(lambda: len(masks.messages) >= stopped_at + 3), node.output
    finally:
        node.stop()
        publisher.stop()


@pytest.mark.parametrize('content, message', [
    (b'', 'cannot be loaded'),
    (b'PK\x03\x04 this is not a checkpoint', 'cannot be loaded'),
])
def test_broken_model_file_exits_with_one_line(tmp_path, content, message):
    """An empty or truncated model file: one error line, exit code 1, no traceback."""
    model = tmp_path / 'broken.pt'
    model.write_bytes(content)
    process = NodeProcess('segtrack_node', {'model': str(model), 'device': 'cpu'})
    assert process.wait(timeout=TIMEOUT) == 1, process.output
    errors = [line for line in process.lines if line.startswith('segtrack_node: error')]
    assert len(errors) == 1 and message in errors[0], process.output
    assert 'Traceback' not in process.output


NETWORK_GUARD = textwrap.dedent("""
    import socket
    attempts = []
    local = ('127.', '::1', 'localhost')
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        remote = not str(address[0]).startswith(local)
        if self.family in (socket.AF_INET, socket.AF_INET6) and remote:
            attempts.append(address)
            raise OSError('network disabled by the test')
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not str(host).startswith(local):
            attempts.append(host)
            raise socket.gaierror('network disabled by the test')
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

    from segtrack_ros.core.runtime import apply_process_defaults
    apply_process_defaults()  # first, as segtrack_node's main() does

    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter
    from segtrack_ros.ros.node import SegTrackNode
    rclpy.init()
    node = SegTrackNode(parameter_overrides=[Parameter('model', value=MODEL),
                                             Parameter('device', value='cpu'),
                                             Parameter('mode', value='track')])
    node._segmenter.process(np.zeros((64, 64, 3), np.uint8), 'check')
    node.destroy_node()
    rclpy.try_shutdown()
    print('network attempts:', attempts)
""")


def test_node_opens_no_network_connection(untrained_weights):
    """
    With the network failing, the node still starts from a local model and never tries it.

    The script does what `segtrack_node` does: the process defaults of its `main()` (importing
    the package changes no environment), then the node.
    """
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith('YOLO_')}  # the package itself must keep it offline
    script = NETWORK_GUARD.replace('MODEL', repr(untrained_weights))
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=TIMEOUT, env=environment, cwd=Path(untrained_weights).parent)
    assert result.returncode == 0, result.stderr
    assert 'network attempts: []' in result.stdout, result.stdout + result.stderr


def test_resets_and_trail_changes_while_publishing_on_its_own_thread(probe, tmp_path):
    """
    ~/reset_tracker and trail_length changes in a loop while trails are drawn: no error.

    With one torch thread a core is free and the node draws and publishes on its own thread,
    overlapped with inference; the old node raised thousands of KeyErrors from the renderer
    here within 4 s. The outputs must keep coming throughout.
    """
    namespace = '/race'
    node = NodeProcess('segtrack_node', {
        'model': str(BUNDLED_MODEL), 'device': 'cpu', 'imgsz': 320, 'mode': 'track',
        'color_mode': 'track', 'trail_length': 10}, namespace,
        environment={'OMP_NUM_THREADS': '1'})
    try:
        publisher = probe.publisher(Image, f'{namespace}/image')
        annotated = probe.collect(Image, f'{namespace}/annotated_image')
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        assert probe.wait_for_graph(
            lambda graph: graph.count_subscribers(f'{namespace}/image') > 0
            and graph.count_subscribers(f'{namespace}/annotated_image') > 0, TIMEOUT), \
            node.output
        assert 'on their own thread' in node.output
        reset = probe.node.create_client(Trigger, f'{namespace}/segtrack_node/reset_tracker')
        parameters = AsyncParameterClient(probe.node, f'{namespace}/segtrack_node')
        assert reset.wait_for_service(TIMEOUT) and parameters.wait_for_services(TIMEOUT)
        scene = build_scene(SceneConfig(width=640, height=480, frames=40, seed=12))
        frames = [render_frame(scene, index)[0] for index in range(40)]
        counts, changes = [], 0
        start = time.monotonic()
        while (time.monotonic() - start < 4.0 or len(annotated.messages) < 15
               ) and time.monotonic() - start < TIMEOUT:
            publisher.publish(image_codec.to_image_msg(frames[changes % 40], 'bgr8',
                                                       probe.header()))
            for call in (reset.call_async(Trigger.Request()), parameters.set_parameters(
                    [Parameter('trail_length', value=1 + changes % 10)])):
                assert wait_until(call.done, 10.0)
            changes += 1
            counts.append(len(annotated.messages))
        assert wait_until(lambda: diagnostic_value(diagnostics, namespace, 'processed') >= 15)
        errors = diagnostic_value(diagnostics, namespace, 'errors')
    finally:
        code, _ = node.stop()
    print(f'{changes} resets and trail changes, {counts[-1]} frames out')
    assert errors == 0, node.output
    assert 'KeyError' not in node.output and 'Traceback' not in node.output, node.output
    assert code == 0
    half = len(counts) // 2
    assert counts[-1] > counts[half] > 0, counts  # the outputs kept coming to the end
    assert changes >= 20


def test_a_converter_fault_is_an_error_and_the_next_frame_is_processed(probe, untrained_weights):
    """
    A message that cannot be deserialized: an error line and count, WARN; the next frame works.

    The fault comes from outside any image check (the converter of the serialized message
    raises its own error) after a bad input; the inference thread survives both, and
    /diagnostics returns to OK once they are older than its window.
    """
    namespace = '/converter_fault'
    process = start_node(probe, untrained_weights, namespace)
    try:
        publisher = probe.publisher(Image, f'{namespace}/image')
        detections = probe.collect(Detection2DArray, f'{namespace}/detections')
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')

        def served():
            message = raw_message(probe)
            publisher.publish(message)
            return wait_until(lambda: detections.by_stamp(message.header.stamp), 10.0)

        assert wait_until(served), process.output
        # Frames keep coming: without them the input goes stalled (WARN) within seconds, and a
        # loaded machine may discover /diagnostics later than that.
        assert wait_until(lambda: served() and diagnostic_level(diagnostics, namespace)
                          == DiagnosticStatus.OK), process.output
        publisher.publish(raw_message(probe, data=bytes(10)))  # a bad input first
        assert wait_until(lambda: diagnostic_value(diagnostics, namespace, 'bad_inputs') == 1)
        assert served(), process.output
        publisher.publish(serialize_message(raw_message(probe))[:-40])  # cut short on the way
        assert wait_until(lambda: diagnostic_value(diagnostics, namespace, 'errors') == 1), \
            process.output
        assert wait_until(lambda: diagnostic_level(diagnostics, namespace)
                          == DiagnosticStatus.WARN)
        assert served(), process.output
        problems_at = time.monotonic()
        assert wait_until(lambda: served() and diagnostic_level(diagnostics, namespace)
                          == DiagnosticStatus.OK), process.output
        assert time.monotonic() - problems_at > WINDOW_SECONDS - 1.5
        assert diagnostic_value(diagnostics, namespace, 'errors') == 1
        assert 'decoding failed on a frame' in process.output
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output


@pytest.fixture(scope='module')
def without_lap(tmp_path_factory):
    """Return an environment in which `lap` cannot be imported, as in a venv without it."""
    folder = tmp_path_factory.mktemp('without_lap')
    (folder / 'sitecustomize.py').write_text(
        "import sys\n\nsys.modules['lap'] = None  # import lap: ModuleNotFoundError\n")
    path = os.pathsep.join(filter(None, (str(folder), os.environ.get('PYTHONPATH'))))
    environment = {'PYTHONPATH': path}
    check = subprocess.run([sys.executable, '-c', 'import lap'], capture_output=True, text=True,
                           env={**os.environ, **environment})
    assert 'ModuleNotFoundError' in check.stderr, check.stderr
    return environment


def test_without_lap_the_node_predicts_and_refuses_tracking_in_one_line(
        probe, untrained_weights, without_lap):
    """No lap: predict mode starts and serves frames; track mode exits with one line."""
    namespace = '/without_lap'
    process = start_node(probe, untrained_weights, namespace, without_lap)
    try:
        publisher = probe.publisher(Image, f'{namespace}/image')
        detections = probe.collect(Detection2DArray, f'{namespace}/detections')

        def served():
            message = raw_message(probe)
            publisher.publish(message)
            return wait_until(lambda: detections.by_stamp(message.header.stamp), 5.0)

        assert wait_until(served), process.output
    finally:
        code, _ = process.stop()
    assert code == 0 and 'Traceback' not in process.output, process.output

    tracking = NodeProcess('segtrack_node', {'model': untrained_weights, 'device': 'cpu',
                                             'mode': 'track'}, environment=without_lap)
    assert tracking.wait(timeout=TIMEOUT) == 1, tracking.output
    errors = [line for line in tracking.lines if line.startswith('segtrack_node: error')]
    assert len(errors) == 1 and 'pip install lap' in errors[0], tracking.output
    assert 'Traceback' not in tracking.output


def test_without_lap_the_video_cli_predicts_and_refuses_tracking_in_one_line(
        untrained_weights, test_video, without_lap, tmp_path):
    """No lap: segtrack-video predicts; --mode track is one error line naming the fix."""
    def run(mode):
        output = tmp_path / f'{mode}.avi'
        result = subprocess.run(
            [str(BIN / 'segtrack-video'), str(test_video), '--model', untrained_weights,
             '--conf', str(UNTRAINED_CONF), '--device', 'cpu', '--imgsz', '160', '--no-show',
             '--max-frames', '2', '--mode', mode, '--output', str(output)],
            capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **without_lap})
        return result, output

    result, output = run('predict')
    assert result.returncode == 0 and output.exists(), result.stderr
    result, output = run('track')
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith('segtrack-video: error:'), result.stderr
    assert 'pip install lap' in errors[0] and not output.exists()


def test_video_cli_refuses_an_imgsz_that_is_not_a_multiple_of_32(test_video, tmp_path, capsys):
    """--imgsz 100 is one error line before any work: the model's stride is 32."""
    output = tmp_path / 'odd.avi'
    with pytest.raises(SystemExit) as exit_info:
        video_main([str(test_video), '--model', str(BUNDLED_MODEL), '--device', 'cpu',
                    '--imgsz', '100', '--no-show', '--output', str(output)])
    assert exit_info.value.code != 0
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and 'multiple of 32' in errors[0] and '100' in errors[0], errors
    assert not output.exists()


def test_reading_the_parameter_table_loads_no_torch_or_ultralytics():
    """`import segtrack_ros.params` (tools, the launch files) stays light: no torch, no model."""
    script = ('import sys\nimport segtrack_ros.params\n'
              "print(sorted({name.split('.')[0] for name in sys.modules} "
              "& {'torch', 'ultralytics'}))")
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]', result.stdout

"""
The launch files, run by the real launch system the way `ros2 launch` runs them.

Each test starts `launch.LaunchService` in its own process (RUNNER does what `ros2 launch`
does: argv, then an IncludeLaunchDescription of the file with the arguments) on the launch files
of a colcon-built prefix, found through the ament index, and checks it from outside: the nodes
and their parameters (read over the parameter services), outputs of frames the test publishes,
failures ending the launch with a non-zero exit code and their reason, no process left behind,
and a clean stop (SIGINT, as a supervisor or Ctrl-C sends) without ERROR lines.

launch and launch_ros are not on PyPI: `make` installs them from ../shared/ros-launch where it
exists; elsewhere these tests skip.
"""

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
import pytest
from rclpy.parameter import parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from ros_harness import make_frame, RELIABLE, running_probe, wait_until
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from segtrack_ros.io import image_codec
from sensor_msgs.msg import CompressedImage, Image
from test_colcon_build import build, prefix  # noqa: F401 (fixtures: the colcon-built prefix)
from vision_msgs.msg import Detection2DArray
import yaml

pytest.importorskip('launch_ros', reason='launch_ros is not installed (make installs it from '
                                         '../shared/ros-launch; ROS installs have it)')

MODEL = 'shapes-seg.pt'
TIMEOUT = 60.0
STOP_SECONDS = 10.0  # launch sends SIGTERM after 5 s of SIGINT: a clean stop is well within
RUNNER = """
import json
import sys

from ament_index_python.packages import get_package_share_directory
import launch
from launch.actions import IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import AnyLaunchDescriptionSource

noninteractive = sys.argv[1] == '--noninteractive'
name, *arguments = sys.argv[1 + noninteractive:]
path = name if name.startswith('/') else (
    f"{get_package_share_directory('segtrack_ros')}/launch/{name}")


def report(context):
    print('launch configurations: ' + json.dumps(dict(context.launch_configurations)),
          flush=True)


service = launch.LaunchService(argv=arguments, noninteractive=noninteractive)
service.include_launch_description(launch.LaunchDescription([
    IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=[
        tuple(argument.split(':=', 1)) for argument in arguments]),
    OpaqueFunction(function=report),
]))
sys.exit(service.run())
"""
STARTED = re.compile(r'\[INFO\] \[(\S+)-\d+\]: process started with pid \[(\d+)\]')
FAILED = re.compile(r'Caught exception in launch \(see debug for traceback\): (.*)')
ONE_NODE_PER_CAMERA = """
from launch import LaunchDescription
from launch.actions import GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    return LaunchDescription([GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource([FindPackageShare('segtrack_ros'),
                                       '/launch/segtrack.launch.py']),
        launch_arguments={'namespace': camera, 'image': f'/{camera}_camera/image_raw',
                          'autostart': 'false'}.items())]) for camera in ('front', 'rear')])
"""
STAND_IN_RVIZ = """#!/bin/sh
echo "stand-in rviz2: $*"
trap 'exit 0' INT TERM
while :; do sleep 0.1; done
"""


def alive(pid):
    """Return whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return '\nState:\tZ' not in status


class LaunchProcess:
    """`ros2 launch segtrack_ros FILE ARGUMENTS...` in its own process, its output captured."""

    def __init__(self, launch_file, arguments, environment, cwd, noninteractive=False):
        options = ['--noninteractive'] if noninteractive else []
        self.noninteractive = noninteractive
        # its own process group, as a shell gives a command: Ctrl-C signals the whole group
        self.process = subprocess.Popen(
            [sys.executable, '-c', RUNNER, *options, launch_file, *arguments], cwd=cwd,
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self):
        """Return everything the launch printed so far."""
        return ''.join(self.lines)

    def started(self, name):
        """Return the pids of the processes named `name` that the launch started."""
        return [int(pid) for process, pid in STARTED.findall(self.output) if process == name]

    def all_started(self):
        """Return the pids of every process the launch started."""
        return [int(pid) for _, pid in STARTED.findall(self.output)]

    def running(self):
        """Return whether the launch still runs."""
        return self.process.poll() is None

    def wait(self, timeout=TIMEOUT):
        """Wait for the launch to end by itself; return its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self):
        """
        Stop as Ctrl-C does; return the exit code and the seconds the launch took to end.

        Ctrl-C in a terminal sends SIGINT to the whole process group, and launch then sends
        none of its own; `ros2 launch --noninteractive` (a supervisor's way) gets SIGINT alone
        and forwards it to what it started.
        """
        start = time.monotonic()
        if self.noninteractive:
            self.process.send_signal(signal.SIGINT)
        else:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout=3 * STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        return code, time.monotonic() - start

    def failure(self):
        """Return the reason the launch gave for failing, or None."""
        match = FAILED.search(self.output)
        return match and match.group(1)

    def error_lines(self):
        """Return the lines that report an error: ERROR logs and tracebacks."""
        return [line for line in self.lines if '[ERROR]' in line or 'Traceback' in line]

    def configurations(self):
        """Return the launch configurations the including file had after the include."""
        line = next(line for line in self.lines if line.startswith('launch configurations: '))
        return json.loads(line.split(': ', 1)[1])

    def leftovers(self):
        """Return the started processes that still run."""
        return [pid for pid in self.all_started() if alive(pid)]

    def kill(self):
        """End the launch and whatever it started, if still running."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.leftovers():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope='module')
def installed(request):
    """Return the install prefix that test_colcon_build's fixtures build (once per module)."""
    return request.getfixturevalue('prefix')


@pytest.fixture(scope='module')
def share(installed):
    """Return the installed share directory of the package."""
    return installed / 'share' / 'segtrack_ros'


@pytest.fixture(scope='module')
def environment(installed):
    """Return the environment of a sourced workspace: the built prefix first in the index."""
    site_packages = next(installed.glob('lib/python*/site-packages'))
    index = os.environ.get('AMENT_PREFIX_PATH') or sys.prefix
    return dict(os.environ, AMENT_PREFIX_PATH=f'{installed}{os.pathsep}{index}',
                PYTHONPATH=os.pathsep.join(filter(None, [str(site_packages),
                                                         os.environ.get('PYTHONPATH')])))


@pytest.fixture
def start(environment, tmp_path):
    """Return a function that starts a launch; every launch is ended after the test."""
    launches = []

    def start_launch(launch_file, *arguments, extra_environment=None, noninteractive=False):
        process = LaunchProcess(launch_file, arguments,
                                {**environment, **(extra_environment or {})}, tmp_path,
                                noninteractive)
        launches.append(process)
        return process

    yield start_launch
    for process in launches:
        process.kill()


@pytest.fixture(scope='module')
def probe():
    """Make the test's own node; it publishes with the large-data profile, as video_publisher."""
    with running_probe('launch_probe') as node:
        yield node


@pytest.fixture(scope='module')
def rviz_prefix(tmp_path_factory):
    """
    Return a prefix with a stand-in rviz2 (no display here): it prints its arguments and waits.

    It is found where launch_ros looks for executables: the ament index and lib/rviz2/rviz2.
    """
    root = tmp_path_factory.mktemp('rviz_prefix')
    marker = root / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'rviz2'
    marker.parent.mkdir(parents=True)
    marker.write_text('')
    script = root / 'lib' / 'rviz2' / 'rviz2'
    script.parent.mkdir(parents=True)
    script.write_text(STAND_IN_RVIZ)
    script.chmod(0o755)
    return root


def rviz2_in(environment):
    """Return whether rviz2 is in the ament index of `environment`."""
    return any((Path(path) / 'share/ament_index/resource_index/packages/rviz2').is_file()
               for path in environment['AMENT_PREFIX_PATH'].split(os.pathsep))


def answer(launch, send, what):
    """
    Return the result of `send()`'s future, sending again while unanswered.

    A service can look ready before its response reaches this process (discovery is not
    finished both ways): that request is never answered. Only for idempotent requests.
    """
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and launch.running():
        future = send()
        if wait_until(future.done, 5.0):
            return future.result()
    raise AssertionError(f'{what}: no answer\n{launch.output}')


def get_parameters(probe, launch, node_name, names):
    """Read parameters of a node of `launch` over its parameter services."""
    client = AsyncParameterClient(probe.node, node_name)
    wait_until(lambda: client.services_are_ready() or not launch.running(), TIMEOUT)
    assert client.services_are_ready(), f'{node_name} has no parameter services:\n{launch.output}'
    result = answer(launch, lambda: client.get_parameters(names), f'{node_name} get_parameters')
    return {name: parameter_value_to_python(value) for name, value in zip(names, result.values)}


def service_client(probe, launch, service_type, name):
    """Return a client of a service of a node of `launch`, once the service is there."""
    client = probe.node.create_client(service_type, name)
    wait_until(lambda: client.service_is_ready() or not launch.running(), TIMEOUT)
    assert client.service_is_ready(), f'no service {name}:\n{launch.output}'
    return client


class Lifecycle:
    """The lifecycle services of a node of a launch, used as a lifecycle manager uses them."""

    def __init__(self, probe, launch, node_name):
        self._launch, self._node_name = launch, node_name
        self._get_state = service_client(probe, launch, GetState, f'{node_name}/get_state')
        self._change_state = service_client(probe, launch, ChangeState,
                                            f'{node_name}/change_state')

    def state(self):
        """Return the label of the node's lifecycle state."""
        return answer(self._launch, lambda: self._get_state.call_async(GetState.Request()),
                      f'{self._node_name} get_state').current_state.label

    def change(self, transition_id, state):
        """Ask for a transition; wait until the node is in `state`."""
        self._change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert wait_until(lambda: self.state() == state, TIMEOUT), self._launch.output


def subscribed(probe, topic, launch):
    """Wait until something subscribes to `topic` (while `launch` runs); True if it did."""
    probe.wait_for_graph(lambda node: node.count_subscribers(topic) > 0 or not launch.running(),
                         TIMEOUT)
    return probe.node.count_subscribers(topic) > 0


class FrameStream:
    """Frames published on some topics at a steady rate from a thread, until stopped."""

    def __init__(self, probe, topics, compressed=False, rate=15.0):
        kind = CompressedImage if compressed else Image
        self._publishers = [probe.publisher(kind, topic, RELIABLE) for topic in topics]
        self._probe, self._compressed, self._period = probe, compressed, 1.0 / rate
        self._stop = threading.Event()
        self.sent = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _message(self, index):
        frame, header = make_frame(index, 320, 240), self._probe.header()
        self.sent.append((header.stamp.sec, header.stamp.nanosec))
        if self._compressed:
            return image_codec.to_compressed_msg(frame, header)
        return image_codec.to_image_msg(frame, 'bgr8', header)

    def _run(self):
        index = 0
        while not self._stop.wait(self._period):
            message = self._message(index)
            for publisher in self._publishers:
                publisher.publish(message)
            index += 1

    def stop(self):
        """Stop publishing."""
        self._stop.set()
        self._thread.join(timeout=5)


def assert_outputs_arrive(probe, stream, namespace):
    """Wait for annotated images and detections of streamed frames on `namespace`."""
    annotated = probe.collect(Image, f'{namespace}/annotated_image')
    detections = probe.collect(Detection2DArray, f'{namespace}/detections')
    assert annotated.wait_for_count(3, TIMEOUT), f'no annotated_image on {namespace}'
    assert detections.wait_for_count(3, TIMEOUT), f'no detections on {namespace}'
    sent = set(stream.sent)
    assert all((m.header.stamp.sec, m.header.stamp.nanosec) in sent
               for m in annotated.messages), 'outputs must copy the input stamps'


def assert_clean_stop(launch):
    """Stop the launch with SIGINT: exit code 0, no ERROR line, nothing left running."""
    code, seconds = launch.stop()
    assert code == 0, launch.output
    assert not launch.error_lines(), ''.join(launch.error_lines())
    assert seconds < STOP_SECONDS, f'the stop took {seconds:.1f} s'
    assert not launch.leftovers(), launch.output


def assert_failed(launch, reason, seconds=TIMEOUT):
    """Assert the launch ends by itself: exit code not 0, `reason`, nothing left running."""
    code = launch.wait(seconds)
    assert code != 0, launch.output
    failure = launch.failure()
    assert failure and reason in failure, launch.output
    assert 'Traceback' not in launch.output, launch.output
    assert wait_until(lambda: not launch.leftovers(), 5.0), launch.output


def declared(share, launch_file):
    """Return the names of the arguments that the installed `launch_file` declares."""
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    description = get_launch_description_from_python_launch_file(
        str(share / 'launch' / launch_file))
    return {argument.name for argument in description.get_launch_arguments()}


def write_params(path, values):
    """Write a ROS 2 params file that sets `values` for every node."""
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': values}}))
    return path


# -- segtrack.launch.py ---------------------------------------------------------------------------

def test_segtrack_launch_arguments_reach_the_node_and_outputs_flow(start, probe):
    """The node arguments become its parameters; compressed frames in, outputs out; clean stop."""
    launch = start('segtrack.launch.py', f'model:={MODEL}', 'device:=cpu', 'mode:=predict',
                   'namespace:=cam', 'image:=/camera/image_raw', 'input_transport:=compressed',
                   'qos_reliability:=reliable')
    assert subscribed(probe, '/camera/image_raw/compressed', launch), launch.output
    values = get_parameters(probe, launch, '/cam/segtrack_node', [
        'model', 'device', 'mode', 'color_mode', 'input_transport', 'qos_reliability',
        'autostart', 'use_sim_time'])
    assert values == {'model': MODEL, 'device': 'cpu', 'mode': 'predict', 'color_mode': 'class',
                      'input_transport': 'compressed', 'qos_reliability': 'reliable',
                      'autostart': True, 'use_sim_time': False}
    stream = FrameStream(probe, ['/camera/image_raw/compressed'], compressed=True)
    try:
        assert_outputs_arrive(probe, stream, '/cam')
        assert_clean_stop(launch)  # while frames keep coming
    finally:
        stream.stop()
    assert launch.started('segtrack_node') and 'is not an argument' not in launch.output


def test_params_file_wins_over_defaults_and_given_arguments_over_the_file(
        start, probe, tmp_path):
    """A params file sets model, device, mode...; an argument given on the command line wins."""
    params = write_params(tmp_path / 'robot.yaml', {
        'model': str(BUNDLED_MODEL), 'device': 'cpu', 'mode': 'predict', 'color_mode': 'class',
        'conf': 0.4, 'imgsz': 320, 'qos_reliability': 'reliable', 'use_sim_time': False})
    launch = start('segtrack.launch.py', f'params_file:={params}', 'namespace:=robot',
                   'mode:=track', 'color_mode:=track', 'use_sim_time:=true', 'log_level:=warn')
    assert subscribed(probe, '/robot/image', launch), launch.output
    values = get_parameters(probe, launch, '/robot/segtrack_node', [
        'model', 'device', 'mode', 'color_mode', 'conf', 'imgsz', 'qos_reliability',
        'use_sim_time'])
    assert values == {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'mode': 'track',
                      'color_mode': 'track', 'conf': 0.4, 'imgsz': 320,
                      'qos_reliability': 'reliable', 'use_sim_time': True}
    assert_clean_stop(launch)
    assert not re.search(r'\[INFO\] \[[\d.]+\] \[robot\.segtrack_node\]', launch.output), \
        'log_level:=warn must hide the INFO lines of the node'


def test_rviz_without_rviz2_names_the_reason_and_runs_the_node(start, probe, environment):
    """rviz:=true where rviz2 is missing: one warning line, the node runs, nothing is left over."""
    if rviz2_in(environment):
        pytest.skip('rviz2 is installed here')
    launch = start('segtrack.launch.py', f'model:={MODEL}', 'device:=cpu', 'namespace:=viz',
                   'rviz:=true')
    assert subscribed(probe, '/viz/image', launch), launch.output
    warnings = [line for line in launch.lines if 'rviz2 is not installed' in line]
    assert len(warnings) == 1 and '[WARNING]' in warnings[0], launch.output
    assert_clean_stop(launch)
    assert launch.started('segtrack_node') and not launch.started('rviz2')


@pytest.mark.parametrize('launch_file, arguments, reason', [
    ('segtrack.launch.py', ['model:=missing-model.pt'], 'missing-model.pt'),
    ('segtrack.launch.py', [f'model:={MODEL}', 'mode:=predict', 'color_mode:=track'],
     'color_mode track needs mode track'),
    ('segtrack.launch.py', ['device:=cuda', f'model:={MODEL}'], 'CUDA'),
], ids=['missing-model', 'contradiction', 'cuda'])
def test_a_node_that_fails_at_start_fails_the_launch(start, launch_file, arguments, reason):
    """The launch ends at once with a non-zero exit code and the node's reason."""
    if 'device:=cuda' in arguments:
        torch = pytest.importorskip('torch')
        if torch.cuda.is_available():
            pytest.skip('CUDA exists here')
    launch = start(launch_file, *arguments)
    assert_failed(launch, reason)
    assert launch.started('segtrack_node')
    assert launch.failure().startswith('segtrack_node failed (exit code 1): ')


@pytest.mark.parametrize('launch_file, arguments, reason', [
    ('segtrack.launch.py', ['mode:=banana'], 'Argument "mode" provided value "banana"'),
    ('segtrack.launch.py', ['params_file:=/nonexistent/robot.yaml'],
     'params_file /nonexistent/robot.yaml not found'),
    ('segtrack.launch.py', ['cameras:=a,b', 'images:=/a/image_raw'],
     'images names 1 topics for 2 cameras'),
    ('multi_camera.launch.py', ['qos_reliability:=sometimes'],
     'Argument "qos_reliability" provided value "sometimes"'),
    ('demo.launch.py', [], 'make demo'),
    ('demo.launch.py', ['source:=missing.avi'], 'source missing.avi not found'),
    ('demo.launch.py', ['source:=0', 'rate:=fast'], "rate must be frames per second, got 'fast'"),
], ids=['bad-choice', 'missing-params-file', 'camera-topics', 'multi-bad-choice',
        'demo-no-sample', 'demo-missing-source', 'demo-bad-rate'])
def test_bad_arguments_fail_before_any_node_starts(start, launch_file, arguments, reason):
    """Refused arguments: non-zero exit with the reason, in seconds, no process started."""
    launch = start(launch_file, *arguments)
    assert_failed(launch, reason, seconds=30)
    assert not launch.all_started(), launch.output


def test_undeclared_arguments_are_named(start):
    """An argument the file does not declare is named in a warning; declared ones are not."""
    launch = start('segtrack.launch.py', 'use_sim_tme:=true', 'mode:=banana')
    assert_failed(launch, 'banana', seconds=30)
    warnings = [line for line in launch.lines if 'is not an argument' in line]
    assert len(warnings) == 1 and "'use_sim_tme:=true'" in warnings[0], launch.output


# -- demo.launch.py -------------------------------------------------------------------------------

def test_demo_in_predict_mode_publishes_the_video_with_the_params_file(start, probe, share,
                                                                       tmp_path, test_video):
    """mode:=predict runs (color_mode from the file: class); namespace, image, params_file pass."""
    params = write_params(tmp_path / 'demo.yaml', {'model': str(BUNDLED_MODEL), 'imgsz': 320})
    launch = start('demo.launch.py', f'source:={test_video}', 'mode:=predict', 'device:=cpu',
                   'namespace:=demo', 'image:=camera/image', f'params_file:={params}',
                   'qos_reliability:=reliable', 'log_level:=warn', noninteractive=True)
    assert subscribed(probe, '/demo/camera/image', launch), launch.output
    values = get_parameters(probe, launch, '/demo/segtrack_node',
                            ['model', 'mode', 'color_mode', 'imgsz', 'qos_reliability'])
    assert values == {'model': str(BUNDLED_MODEL), 'mode': 'predict', 'color_mode': 'class',
                      'imgsz': 320, 'qos_reliability': 'reliable'}
    assert get_parameters(probe, launch, '/demo/video_publisher', ['source', 'loop']) == {
        'source': str(test_video), 'loop': True}
    annotated = probe.collect(Image, '/demo/annotated_image')
    assert annotated.wait_for_count(3, TIMEOUT), launch.output
    assert_clean_stop(launch)
    assert 'is not an argument' not in launch.output
    assert '[INFO] [' not in ''.join(line for line in launch.lines
                                     if line.startswith(('[segtrack_node', '[video_publisher')))
    configurations = launch.configurations()
    assert set(configurations) == declared(share, 'demo.launch.py'), \
        'demo.launch.py leaks launch configurations'
    assert configurations['namespace'] == 'demo' and configurations['params_file'] == str(params)


def test_demo_defaults_to_the_bundled_model_and_passes_sim_time_and_autostart(start, probe,
                                                                              test_video):
    """Without model or params_file the demo runs shapes-seg.pt; both nodes get use_sim_time."""
    launch = start('demo.launch.py', f'source:={test_video}', 'autostart:=false',
                   'use_sim_time:=true', 'namespace:=lazy')
    node = '/lazy/segtrack_node'
    assert get_parameters(probe, launch, node, ['model', 'autostart', 'use_sim_time']) == {
        'model': MODEL, 'autostart': False, 'use_sim_time': True}
    assert get_parameters(probe, launch, '/lazy/video_publisher', ['use_sim_time']) == {
        'use_sim_time': True}
    assert Lifecycle(probe, launch, node).state() == 'unconfigured'
    assert_clean_stop(launch)


def test_demo_ends_with_code_0_after_a_video_played_once(start, probe, test_video):
    """loop:=false: the video's end ends the launch, cleanly, node included."""
    # 12 frames at 1 Hz: the node is up well before the end (a stop while it starts is not
    # what this tests)
    launch = start('demo.launch.py', f'source:={test_video}', 'loop:=false', 'rate:=1',
                   'device:=cpu', 'namespace:=once')
    assert subscribed(probe, '/once/image', launch), launch.output
    assert 'end of video' not in launch.output, 'the video ended before the node was up'
    assert launch.wait(TIMEOUT) == 0, launch.output
    assert 'end of video' in launch.output and not launch.error_lines(), launch.output
    assert launch.started('segtrack_node') and not launch.leftovers()


def test_demo_ends_when_the_node_fails(start, test_video):
    """A node that dies takes the demo down: non-zero exit, the reason, no video_publisher left."""
    # A failure after the model library loaded: video_publisher is up by then, and stopped.
    launch = start('demo.launch.py', f'source:={test_video}', 'model:=missing-model.pt')
    assert_failed(launch, 'missing-model.pt')
    assert launch.started('video_publisher') and launch.started('segtrack_node')
    assert 'is not an argument' not in launch.output


# -- multi_camera.launch.py -----------------------------------------------------------------------

def documented_command(share):
    """Return the arguments of the first command in multi_camera.launch.py's docstring."""
    text = (share / 'launch' / 'multi_camera.launch.py').read_text()
    line = next(line for line in text.splitlines()
                if line.strip().startswith('ros2 launch segtrack_ros multi_camera.launch.py'))
    return line.split()[4:]


def test_multi_camera_documented_command_one_node_two_cameras_clean_stop(start, probe, share):
    """The documented command: one node reads both cameras, outputs flow, stops with no ERROR."""
    launch = start('multi_camera.launch.py', *documented_command(share))
    for topic in ('/front_camera/image_raw', '/rear_camera/image_raw'):
        assert subscribed(probe, topic, launch), launch.output
    assert len(launch.started('segtrack_node')) == 1 and len(launch.all_started()) == 1
    assert get_parameters(probe, launch, '/segtrack_node', ['cameras']) == {
        'cameras': ['front', 'rear']}
    stream = FrameStream(probe, ['/front_camera/image_raw', '/rear_camera/image_raw'])
    try:
        assert_outputs_arrive(probe, stream, '/front')
        assert_outputs_arrive(probe, stream, '/rear')
        assert_clean_stop(launch)  # both cameras busy: the stop of issue 17, point 7
    finally:
        stream.stop()
    assert 'is not an argument' not in launch.output


def test_multi_camera_arguments_lifecycle_one_rviz_and_no_leaks(start, probe, share,
                                                                environment, rviz_prefix):
    """Cameras and topics as arguments, autostart false, one rviz; its includes leak nothing."""
    index = f'{rviz_prefix}{os.pathsep}{environment["AMENT_PREFIX_PATH"]}'
    launch = start('multi_camera.launch.py', f'model:={MODEL}', 'device:=cpu',
                   'cameras:=left,right', 'images:=/left_cam/raw,/right_cam/raw',
                   'namespace:=perception', 'autostart:=false', 'rviz:=true',
                   'input_transport:=compressed', 'qos_reliability:=reliable',
                   'use_sim_time:=true', 'log_level:=warn',
                   extra_environment={'AMENT_PREFIX_PATH': index})
    node = '/perception/segtrack_node'
    assert get_parameters(probe, launch, node, [
        'cameras', 'autostart', 'input_transport', 'qos_reliability', 'use_sim_time']) == {
        'cameras': ['left', 'right'], 'autostart': False, 'input_transport': 'compressed',
        'qos_reliability': 'reliable', 'use_sim_time': True}
    lifecycle = Lifecycle(probe, launch, node)
    assert lifecycle.state() == 'unconfigured'
    lifecycle.change(Transition.TRANSITION_CONFIGURE, 'inactive')
    lifecycle.change(Transition.TRANSITION_ACTIVATE, 'active')
    for topic in ('/left_cam/raw/compressed', '/right_cam/raw/compressed'):
        assert subscribed(probe, topic, launch), launch.output
    assert len(launch.started('segtrack_node')) == 1 and len(launch.started('rviz2')) == 1
    rviz_line = next(line for line in launch.lines if 'stand-in rviz2:' in line)
    assert f'-d {share / "config" / "segtrack.rviz"}' in rviz_line
    assert '__ns:=/perception/left' in rviz_line and '--log-level warn' in rviz_line
    configurations = launch.configurations()
    assert set(configurations) == declared(share, 'multi_camera.launch.py'), \
        'multi_camera.launch.py leaks launch configurations'
    assert configurations['namespace'] == 'perception'
    assert_clean_stop(launch)


def test_one_node_per_camera_as_the_readme_shows(start, probe, tmp_path):
    """Scoped includes of segtrack.launch.py, one per camera: two nodes, arguments kept apart."""
    wrapper = tmp_path / 'two_nodes.launch.py'
    wrapper.write_text(ONE_NODE_PER_CAMERA)
    launch = start(str(wrapper))
    for camera in ('front', 'rear'):
        node = f'/{camera}/segtrack_node'
        assert get_parameters(probe, launch, node, ['model', 'autostart']) == {
            'model': 'yolov8n-seg.pt', 'autostart': False}
        assert Lifecycle(probe, launch, node).state() == 'unconfigured'
    assert len(launch.started('segtrack_node')) == 2
    assert not set(launch.configurations()) & {'namespace', 'image', 'autostart'}, \
        'the includes leak launch configurations'
    assert_clean_stop(launch)

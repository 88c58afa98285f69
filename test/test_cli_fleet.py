"""
Tests of `segtrack-fleet`: generated bags through a local Ray, against `segtrack-bag`'s outputs.

Ray takes 5-20 s to start here, so the file shares one local Ray (started as the command starts
it) for the module; one test runs the installed command whole, with its own Ray, and checks it
leaves no Ray process behind. The bags are `test_cli_bag`'s (two cameras and a chatter topic).
"""

from contextlib import contextmanager, redirect_stderr, redirect_stdout
import csv
import importlib.util
import io
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from conftest import UNTRAINED_CONF
import psutil
import pytest
from segtrack_ros.cli import fleet, fleet_pool
from segtrack_ros.cli.bag import process_bag
from segtrack_ros.cli.common import make_segmenter, UsageError
from test_cli_bag import (decoded_bag, FRONT, input_messages, REAR, run_cli as run_bag,
                          write_bag)

# Not imported here: Ray must be imported the way the command does (fleet.import_ray).
pytestmark = pytest.mark.skipif(importlib.util.find_spec('ray') is None,
                                reason='segtrack-fleet needs Ray (requirements-fleet.txt)')

SCRIPT = Path(sys.executable).parent / 'segtrack-fleet'
TOPICS = ['--topic', FRONT, '--topic', REAR]
DASHBOARD_PORT = 8265  # Ray's web dashboard (the minimal one without its web server serves none)
LOOPBACK = {'127.0.0.1', '::1', '::ffff:127.0.0.1'}


class Watched:
    """The command in a process of its own, and every process it starts (Ray's, sampled)."""

    def __init__(self, argv, env=None):
        self.process = psutil.Popen([str(arg) for arg in argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
        self.started = {}
        self.names = {}  # pid -> name of each process seen below the command

    def sample(self):
        """Note the processes below the command now (Ray's servers, agents and workers)."""
        try:
            for child in self.process.children(recursive=True):
                self.started[child.pid] = child
                self.names[child.pid] = child.name()
        except psutil.Error:
            pass

    def wait_for(self, condition, timeout=240):
        """Sample until `condition()` holds (the command must still run)."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()
            self.sample()
            time.sleep(0.05)
        self.sample()

    def left_behind(self):
        """Return the processes the command started that still run 10 s after it ended."""
        _, alive = psutil.wait_procs(list(self.started.values()), timeout=10)
        return [process for process in alive if process.status() != psutil.STATUS_ZOMBIE]


def run_fleet(argv):
    """Run `segtrack-fleet` in this process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            fleet.main([str(arg) for arg in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def summary_rows(folder):
    """Return the rows of `folder`/summary.csv by bag name."""
    with open(Path(folder) / 'summary.csv', newline='') as file:
        return {row['bag']: row for row in csv.DictReader(file)}


@contextmanager
def torch_threads(count):
    """Run the block with `count` torch threads (float sums, hence scores, depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Return good bags in each form (MCAP and sqlite3 folders, a .mcap file) and a corrupt one."""
    folder = tmp_path_factory.mktemp('fleet_inputs')
    good = [write_bag(folder / 'drive_a', 'mcap', input_messages(4)),
            write_bag(folder / 'drive_b', 'sqlite3', input_messages(3))]
    single = write_bag(folder / 'single', 'mcap', input_messages(2))
    good.append(Path(shutil.copy(single / 'single.mcap', folder / 'drive_c.mcap')))
    corrupt = folder / 'corrupt'
    shutil.copytree(good[0], corrupt)
    data = (corrupt / 'drive_a.mcap').read_bytes()
    (corrupt / 'drive_a.mcap').write_bytes(data[:len(data) // 2])
    return good, corrupt


@pytest.fixture(scope='module')
def model_flags(untrained_weights, permissive_tracker):
    """Return the model flags of every run: untrained weights, forced detections, tracking."""
    return ['--model', untrained_weights, '--device', 'cpu', '--conf', UNTRAINED_CONF,
            '--imgsz', 160, '--max-det', 6, '--tracker', permissive_tracker]


def test_workers_count_every_frame_of_a_bag(bags, model_flags, tmp_path):
    """The frame count a worker reports as progress sees each frame `segtrack-bag` processes."""
    good, _ = bags
    args = fleet.build_parser().parse_args(
        [str(arg) for arg in (good[0], '--output', tmp_path, *TOPICS, *model_flags)])
    segmenter = fleet_pool.CountingSegmenter(make_segmenter(args))
    summary = process_bag(args, segmenter, str(good[0]), str(tmp_path / 'out'))
    assert segmenter.frames == summary.frames == 8


def test_without_ray_one_line_names_the_install(tmp_path):
    """Without Ray the command says in one line what to install, and exits 1."""
    code = ('import sys; sys.modules["ray"] = None; from segtrack_ros.cli import fleet; '
            'fleet.main(sys.argv[1:])')
    done = subprocess.run([sys.executable, '-c', code, 'bag', '--output', str(tmp_path),
                           '--topic', FRONT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f'segtrack-fleet: error: {fleet.INSTALL}']
    assert 'segtrack_ros[fleet]' in fleet.INSTALL and not list(tmp_path.iterdir())


def test_command_starts_its_ray_and_sigterm_stops_all(bags, model_flags, tmp_path):
    """
    The installed command starts a local Ray and processes a bag; SIGTERM during the next bag.

    Usage statistics are off in Ray's processes (not set by the caller). It exits 130 in one
    line, the finished bag stays, the other leaves no partial output, and no Ray process is left.
    """
    good, _ = bags
    long_bag = write_bag(tmp_path / 'long', 'mcap', input_messages(60))
    output = tmp_path / 'out'
    env = {name: value for name, value in os.environ.items()
           if name != 'RAY_USAGE_STATS_ENABLED'}
    command = Watched([SCRIPT, good[2], long_bag, '--output', output, '--cpus-per-task', 2,
                       *TOPICS, *model_flags], env)  # one worker: drive_c, then long
    command.wait_for(lambda: list(output.glob('.long.*.partial')), timeout=300)
    ray_servers = [command.started[pid] for pid, name in command.names.items()
                   if name in ('gcs_server', 'raylet')]
    assert {process.environ().get('RAY_USAGE_STATS_ENABLED') for process in ray_servers} == {
        '0'}, command.names
    command.process.send_signal(signal.SIGTERM)
    _, err = command.process.communicate(timeout=60)
    assert command.process.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"segtrack-fleet: error: interrupted; finished bags are in '{output}'")
    assert [path.name for path in output.iterdir()] == ['drive_c']
    assert (output / 'drive_c' / 'metadata.yaml').is_file()
    assert {'gcs_server', 'raylet'} <= set(command.names.values()), command.names
    assert not command.left_behind()


@pytest.fixture(scope='module')
def ray_session():
    """Start one local Ray the way `segtrack-fleet` does, for the module; stop it, all of it."""
    ray = fleet.import_ray(local=True)
    fleet.start_local_ray(ray)
    yield ray
    processes = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f'Ray processes left behind: {alive}'


def test_ray_listens_on_loopback_only(ray_session):
    """Every socket of the local Ray's processes is on 127.0.0.1: nothing leaves loopback."""
    processes = psutil.Process().children(recursive=True)
    names = {process.name() for process in processes}
    assert {'gcs_server', 'raylet'} <= names, names
    sockets = [(process.name(), connection) for process in processes
               for connection in process.net_connections(kind='inet')]
    sockets += [('driver', connection)
                for connection in psutil.Process().net_connections(kind='inet')]
    assert any(connection.status == psutil.CONN_LISTEN for _, connection in sockets)
    for name, connection in sockets:
        assert connection.laddr.port != DASHBOARD_PORT, f'{name} serves the dashboard'
        assert connection.laddr.ip in LOOPBACK, (name, connection)
        assert not connection.raddr or connection.raddr.ip in LOOPBACK, (name, connection)


def test_same_outputs_as_segtrack_bag_and_failures(ray_session, bags, model_flags, tmp_path):
    """
    Three good bags and a corrupt one on one worker: the good ones hold `segtrack-bag`'s messages.

    The corrupt bag fails the same way each time: tried once, reported in one line; the others
    go on; exit 1. The one worker (its model loaded once) did every bag; the table and the
    summary give each bag's frames, fps and instances as `segtrack-bag` counts them.
    """
    good, corrupt = bags
    output = tmp_path / 'out'
    code, out, err = run_fleet([*good, corrupt, '--output', output, '--cpus-per-task', 2,
                                *TOPICS, *model_flags])
    assert code == 1, err
    failure = (f"segtrack-fleet: {corrupt}: failed after 1 attempt(s): bag '{corrupt}' "
               'cannot be read: File end magic is invalid.\n')
    assert err.count('failed after') == 1 and failure in err, err
    assert '3 bag(s) done, 0 skipped (done before), 1 failed' in out
    rows = summary_rows(output)
    assert {name: row['status'] for name, row in rows.items()} == {
        'drive_a': 'done', 'drive_b': 'done', 'drive_c': 'done', 'corrupt': 'failed'}
    assert [rows[name]['frames'] for name in ('drive_a', 'drive_b', 'drive_c')] == ['8', '6', '4']
    assert rows['corrupt']['attempts'] == '1'
    assert len({row['worker'] for row in rows.values()}) == 1, rows
    assert re.fullmatch(r'.+:\d+', rows['corrupt']['worker']), rows  # host:pid
    assert sorted(path.name for path in output.iterdir()) == [
        'drive_a', 'drive_b', 'drive_c', 'summary.csv']  # no partial output left
    assert [line.split() for line in out.splitlines()[:5]] == [
        ['bag', 'frames', 'fps', 'instances', 'status'],
        *([row['bag'], row['frames'], row['fps'], row['instances'], 'done']
          for row in (rows['drive_a'], rows['drive_b'], rows['drive_c'])),
        ['corrupt', 'failed']]
    for bag in good:
        row = rows[fleet.output_name(bag)]
        assert float(row['fps']) == pytest.approx(int(row['frames']) / float(row['seconds']),
                                                  rel=0.05), row
        expected = tmp_path / f'bag_{bag.name}'
        with torch_threads(2):  # as the fleet's worker of --cpus-per-task 2
            code, out, err = run_bag([bag, expected, *TOPICS, *model_flags])
        assert code == 0, err
        assert f" {row['instances']} instances," in out, (row, out)
        assert decoded_bag(output / fleet.output_name(bag)) == decoded_bag(expected), bag


def test_a_worker_that_dies_is_restarted_and_its_bag_retried(ray_session, model_flags, tmp_path):
    """A worker killed mid-bag: Ray restarts it, the bag runs again and is done; no partial."""
    long_bag = write_bag(tmp_path / 'long', 'mcap', input_messages(40))
    output = tmp_path / 'out'
    killed = []

    def kill_the_worker():
        deadline = time.monotonic() + 240
        while not list(output.glob('.long.*.partial')) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [process for process in psutil.Process().children(recursive=True)
                   if process.name() == 'ray::BagWorker']
        for process in workers:
            process.kill()
        killed.extend(workers)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    code, _, err = run_fleet([long_bag, '--output', output, *TOPICS, *model_flags])
    killer.join()
    assert len(killed) == 1 and code == 0, err
    row = summary_rows(output)['long']
    assert (row['status'], row['attempts'], row['frames']) == ('done', '2', '80')
    assert sorted(path.name for path in output.iterdir()) == ['long', 'summary.csv']


def test_a_bag_failing_each_time_is_tried_three_times(ray_session, bags, model_flags, tmp_path):
    """An unexpected error at every attempt: the bag is tried 3 times, then told in one line."""
    class WornWorker(fleet_pool.BagWorker):
        def process(self, args, source, target):
            raise RuntimeError(f'worn out on {Path(source).name}')

    class WornFleet(fleet_pool.Fleet):
        worker = WornWorker

    good, _ = bags
    args = fleet.build_parser().parse_args(
        [str(arg) for arg in (good[0], '--output', tmp_path, *TOPICS, *model_flags)])
    err = io.StringIO()
    with redirect_stderr(err):
        rows = WornFleet(ray_session, args, [(good[0], 'drive_a')], progress=False).run()
    assert err.getvalue().splitlines() == [
        f'segtrack-fleet: {good[0]}: failed after 3 attempt(s): RuntimeError: worn out on '
        'drive_a']
    row = rows['drive_a']
    assert (row['status'], row['attempts'], row['reason']) == (
        'failed', 3, 'RuntimeError: worn out on drive_a')
    assert os.listdir(tmp_path) == []


def test_resume_skips_finished_bags(ray_session, bags, model_flags, tmp_path):
    """A second run of the same list (an @file) skips the finished bags, tries the rest again."""
    good, corrupt = bags
    output = tmp_path / 'out'
    listing = tmp_path / 'bags.txt'
    listing.write_text(f'# first run\n{good[0]}\n\n{corrupt}\n')
    code, _, err = run_fleet([f'@{listing}', '--output', output, *TOPICS, *model_flags])
    assert code == 1, err
    first = (output / 'drive_a' / 'metadata.yaml').stat().st_mtime_ns
    listing.write_text(f'{good[0]}\n{corrupt}\n{good[1]}\n')
    code, out, err = run_fleet([f'@{listing}', '--output', output, *TOPICS, *model_flags])
    assert code == 1, err
    assert (output / 'drive_a' / 'metadata.yaml').stat().st_mtime_ns == first
    rows = summary_rows(output)
    assert rows['drive_a']['status'] == 'skipped (done before)'
    assert rows['drive_a']['frames'] == '8'  # the earlier run's figures are kept
    assert rows['drive_b']['status'] == 'done' and rows['corrupt']['status'] == 'failed'
    assert '1 bag(s) done, 1 skipped (done before), 1 failed' in out
    # Every bag done: the command says so and starts no Ray.
    command = Watched([SCRIPT, good[0], good[1], '--output', output, *TOPICS, *model_flags])
    command.wait_for(lambda: command.process.poll() is not None, timeout=120)
    out, err = command.process.communicate()
    assert command.process.returncode == 0, err
    assert '0 bag(s) done, 2 skipped (done before), 0 failed' in out
    assert not command.names, command.names


def test_bad_model_stops_the_job_in_one_line(ray_session, bags, tmp_path):
    """A model the workers cannot load is one error line and exit 1, not a failure per bag."""
    good, _ = bags
    code, out, err = run_fleet([good[0], '--output', tmp_path / 'out', *TOPICS,
                                '--model', tmp_path / 'missing.pt'])
    assert code == 1
    assert err.strip().splitlines() == [
        f"segtrack-fleet: error: model '{tmp_path / 'missing.pt'}' not found: give the path "
        'of a .pt/.onnx/.engine file or an OpenVINO folder, or an official name such as '
        'yolov8n-seg.pt'], err


def test_inputs_of_one_name_are_refused(tmp_path):
    """Two inputs that would write the same output folder are refused before anything runs."""
    with pytest.raises(UsageError, match="'a/drive' and 'b/drive.mcap' would both write"):
        fleet.plan(['a/drive', 'b/drive.mcap'], tmp_path)
    assert fleet.plan(['a/x.mcap', 'b/y/'], tmp_path) == [('a/x.mcap', 'x'), ('b/y/', 'y')]


@pytest.mark.parametrize(('resources', 'cpus', 'gpus', 'bags', 'plan'), [
    ({'CPU': 2.0}, 1.0, None, 5, (2, 0.0)),  # this machine: one worker per core
    ({'CPU': 2.0}, 2.0, None, 5, (1, 0.0)),
    ({'CPU': 64.0}, 1.0, None, 3, (3, 0.0)),  # no more workers than bags
    ({'CPU': 64.0, 'GPU': 4.0}, 1.0, None, 10, (4, 1.0)),  # GPUs: one each by default
    ({'CPU': 64.0, 'GPU': 4.0}, 1.0, 0.5, 10, (8, 0.5)),
    ({'CPU': 64.0, 'GPU': 4.0}, 1.0, 0.0, 10, (10, 0.0)),  # GPUs left alone when asked
    ({'CPU': 3.0, 'GPU': 4.0}, 1.0, None, 10, (3, 1.0)),  # the CPUs limit
])
def test_worker_plan_fits_the_cluster(resources, cpus, gpus, bags, plan):
    """As many workers as the cluster's CPUs and GPUs hold, one GPU each when it has GPUs."""
    assert fleet_pool.worker_plan(resources, cpus, gpus, bags) == plan


@pytest.mark.parametrize(('resources', 'cpus', 'gpus', 'message'), [
    ({'CPU': 2.0}, 4.0, None, r'\(2 CPUs, 0 GPUs\) with --cpus-per-task 4 --gpus-per-task 0$'),
    ({'CPU': 2.0}, 1.0, 1.0, r'\(2 CPUs, 0 GPUs\) with --cpus-per-task 1 --gpus-per-task 1$'),
    ({}, 1.0, None, r'\(0 CPUs, 0 GPUs\)'),
])
def test_worker_plan_refuses_a_cluster_no_worker_fits(resources, cpus, gpus, message):
    """No worker fits: one line naming the cluster's resources and the flags."""
    with pytest.raises(UsageError, match=f'^no worker fits the cluster {message}'):
        fleet_pool.worker_plan(resources, cpus, gpus, 4)


def test_a_cluster_that_does_not_answer_is_one_line(tmp_path):
    """
    --address of no running cluster: one line and exit 1 within seconds, no Ray process started.

    Ray Client (ray://) and `auto` (here through RAY_ADDRESS, as a stale address of a stopped
    `ray start` would be): Ray alone waited 30 s and minutes.
    """
    env = dict(os.environ, RAY_ADDRESS='127.0.0.1:1')
    commands = {address: Watched([SCRIPT, 'bag', '--output', tmp_path / 'out', *TOPICS,
                                  '--address', address], env)
                for address in ('ray://127.0.0.1:1', 'auto')}
    start = time.monotonic()
    for command in commands.values():
        command.wait_for(lambda: command.process.poll() is not None, timeout=60)
    assert time.monotonic() - start < 30
    for address, command in commands.items():
        _, err = command.process.communicate()
        assert command.process.returncode == 1, err
        assert re.fullmatch(r'segtrack-fleet: error: no Ray cluster answers at [0-9.]+:1 '
                            rf"\(--address '{re.escape(address)}'\): Connection refused\n",
                            err), err
        assert not command.names, command.names
    assert not (tmp_path / 'out').exists()


def test_flags_are_checked_before_ray_starts(tmp_path):
    """Out-of-range flags are one line and exit 1 without starting Ray."""
    before = {process.pid for process in psutil.Process().children(recursive=True)}
    code, _, err = run_fleet(['bag', '--output', tmp_path, *TOPICS, '--cpus-per-task', '0'])
    assert (code, err.strip()) == (
        1, 'segtrack-fleet: error: --cpus-per-task must be positive, got 0')
    assert {process.pid for process in psutil.Process().children(recursive=True)} <= before
    assert os.listdir(tmp_path) == []

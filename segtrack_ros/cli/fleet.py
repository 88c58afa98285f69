"""
`segtrack-fleet`: `segtrack-bag` over many bags at once, one Ray task per bag.

Each bag goes whole to one worker (tracking needs a camera's frames in order), which runs the
same code as `segtrack-bag` in its own process; a worker is a Ray actor that loads the model
once and keeps it for every bag it is given. Without `--address` a local Ray is started on
127.0.0.1 only and stopped at the end; with one, the job joins that cluster. A bag whose output
exists is skipped (outputs appear only complete), a failed one is retried, then reported in
one line while the others go on; `DIR/summary.csv` tells what became of each bag. This module
is the command; the workers and the pool that feeds them are in `cli/fleet_pool.py`.
"""

import argparse
import csv
import logging
import os
from pathlib import Path
import signal
import socket
import sys

from segtrack_ros.cli.bag import add_bag_arguments
from segtrack_ros.cli.common import check_args, run_main, UsageError
from segtrack_ros.cli.fleet_pool import Fleet
from segtrack_ros.core.runtime import usable_cores
from segtrack_ros.io.bag_io import BagError, check_namespace

INSTALL = ("segtrack-fleet needs Ray, which is not installed: pip install 'segtrack_ros[fleet]' "
           '(or pip install -r requirements-fleet.txt)')
CSV_FIELDS = ('bag', 'input', 'status', 'frames', 'seconds', 'fps', 'instances', 'tracks',
              'skipped_frames', 'attempts', 'worker', 'reason')
LOOPBACK = ('127.0.0.1', '::1')
SKIPPED = 'skipped (done before)'
# Only the small summaries travel through Ray's object store; its default takes 30 % of RAM.
OBJECT_STORE_BYTES = 100 * 2**20
# How long a cluster's address may take to answer before the job gives up on joining it.
JOIN_SECONDS = 10


class ListFileParser(argparse.ArgumentParser):
    """An argument parser whose `@file` lists hold one argument a line; blanks and #s skipped."""

    def convert_arg_line_to_args(self, arg_line):
        """Return the argument of one line of an `@file` (none for blank and comment lines)."""
        line = arg_line.strip()
        return [] if not line or line.startswith('#') else [line]


def build_parser():
    """Build the command line of `segtrack-fleet`: its own flags and those of `segtrack-bag`."""
    parser = ListFileParser(
        prog='segtrack-fleet', fromfile_prefix_chars='@',
        description='Run segtrack-bag over many bags, one Ray task per bag: a local Ray on '
                    '127.0.0.1, or a cluster with --address.')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='rosbag2 folder or .mcap file; @list.txt reads one a line')
    parser.add_argument('--output', dest='output_dir', required=True, metavar='DIR',
                        help='folder of the outputs: DIR/<input name>/ and DIR/summary.csv')
    parser.add_argument('--address',
                        help='Ray cluster to join (auto, ray://host:10001, host:6379); '
                             'default: a local Ray on this machine, 127.0.0.1 only')
    parser.add_argument('--cpus-per-task', type=float, default=1.0,
                        help='CPUs a worker holds, and its torch threads (default 1)')
    parser.add_argument('--gpus-per-task', type=float,
                        help='GPUs a worker holds (default: 1 when the cluster has GPUs)')
    add_bag_arguments(parser)
    return parser


def output_name(path):
    """Name the output of input bag `path`: a folder's name, a `.mcap` file's stem."""
    path = Path(path)
    return path.stem if path.suffix == '.mcap' else path.name


def plan(inputs, output_dir):
    """Return [(input, output name)]; UsageError for two inputs of one output name."""
    names = {}
    for path in inputs:
        name = output_name(path)
        if not name or name.startswith('.') or name == 'summary':
            raise UsageError(f"input '{path}' gives no usable output name")
        if name in names:
            raise UsageError(f"inputs '{names[name]}' and '{path}' would both write "
                             f"'{Path(output_dir) / name}': run them in separate jobs")
        names[name] = path
    return [(path, name) for name, path in names.items()]


def is_done(output_dir, name):
    """Tell whether bag `name` has its output already (outputs appear only once complete)."""
    return (Path(output_dir) / name / 'metadata.yaml').is_file()


def import_ray(local):
    """
    Import Ray for a local run (`local`) or to join a cluster; UsageError naming the install.

    Usage statistics are off unless the user chose. A local Ray keeps to loopback through
    Ray's local-only mode (its default on macOS and Windows), which is read when Ray is imported:
    every server then binds to 127.0.0.1 instead of all interfaces. To join a cluster, Ray tries
    its address once, for about 2 x JOIN_SECONDS, instead of 20 times (unless the user chose).
    """
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    if local:
        os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'
    else:
        os.environ.setdefault('RAY_gcs_server_port_wait_time_s', '1')
        os.environ.setdefault('RAY_py_gcs_connect_timeout_s', str(JOIN_SECONDS))
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


def start_local_ray(ray, cpus=None):
    """
    Start a local Ray on 127.0.0.1 without dashboard; `cpus` default: every usable core.

    Ray must come from `import_ray(local=True)`: imported earlier, it would serve the network
    (UsageError then).
    """
    if ray.util.get_node_ip_address() not in LOOPBACK:
        raise UsageError('Ray was imported before segtrack-fleet could keep it on 127.0.0.1: '
                         'import it through segtrack_ros.cli.fleet.import_ray(local=True)')
    # Errors only: Ray's warnings at start name its defaults (token authentication is on).
    ray.init(address='local', num_cpus=cpus or usable_cores(), include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR)


def cluster_endpoint(address):
    """
    Return the (host, port) that joining Ray cluster `address` connects to first.

    `auto` is found as `ray.init` finds it: RAY_ADDRESS, else Ray's own lookup (the last `ray
    start` on this machine, else a Ray running here; ConnectionError when there is none).
    ValueError for an address of no host:port; None for a scheme other than ray:// (Ray's).
    """
    if address == 'auto':
        address = os.environ.get('RAY_ADDRESS') or address
    if '://' not in address:
        # Ray's lookup of `auto` and of localhost (this machine's address): no public function.
        from ray._private.services import canonicalize_bootstrap_address
        address = canonicalize_bootstrap_address(address)
    elif not address.startswith('ray://'):
        return None
    host, _, port = address.removeprefix('ray://').rpartition(':')
    if not host or not port.isdigit():
        raise ValueError('give host:port, as in ray://HEAD_IP:10001 or HEAD_IP:6379')
    return host.strip('[]'), int(port)


def join_cluster(ray, address):
    """
    Connect to the Ray cluster at `address`; UsageError in one line within a bounded time.

    Its host and port are tried first, for JOIN_SECONDS: Ray alone retries an address that does
    not answer (a stale `auto` of a `ray start` long stopped) for minutes, printing each retry.
    """
    try:
        endpoint = cluster_endpoint(address)
    except (ConnectionError, ValueError) as error:
        raise UsageError(f"--address '{address}': {_first_line(error)}") from None
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=JOIN_SECONDS).close()
        except OSError as error:
            raise UsageError(f'no Ray cluster answers at {endpoint[0]}:{endpoint[1]} (--address '
                             f"'{address}'): {error.strerror or error}") from None
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise UsageError(f'{error}; a cluster with token authentication (on by default in '
                         'Ray 2.60) needs RAY_AUTH_MODE=token and its token here') from None
    except (RuntimeError, ValueError) as error:  # no Ray there; Ray Client not installed
        raise UsageError(f"--address '{address}': {_first_line(error)}") from None


def _first_line(error):
    return (str(error).strip().splitlines() or [repr(error)])[0]


def read_summary(path):
    """Return the rows of an earlier summary.csv by bag name ({} when there is none)."""
    try:
        with open(path, newline='') as file:
            return {row['bag']: row for row in csv.DictReader(file)}
    except (OSError, KeyError, csv.Error):
        return {}


def write_summary(path, rows):
    """Write summary.csv whole (a temporary file renamed), so it is never half-written."""
    temporary = Path(path).with_name(f'.{Path(path).name}.partial')
    with open(temporary, 'w', newline='') as file:
        writer = csv.DictWriter(file, CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)


def table(rows):
    """Return the summary as lines of a table: bag, frames, fps, instances, status."""
    columns = ('bag', 'frames', 'fps', 'instances', 'status')
    cells = [columns] + [tuple(str(row.get(column, '')) for column in columns) for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    return ['  '.join(cell.ljust(width) if index in (0, 4) else cell.rjust(width)
                      for index, (cell, width) in enumerate(zip(line, widths))).rstrip()
            for line in cells]


def run(args, ray, progress=True):
    """Run the job of parsed `args` on the Ray this process is connected to; return the rows."""
    output_dir = Path(args.output_dir)
    jobs = plan(args.inputs, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / 'summary.csv'
    earlier = read_summary(summary_path)
    rows = {}
    todo = []
    for path, name in jobs:
        if is_done(output_dir, name):
            row = dict(earlier.get(name, {'bag': name, 'input': path}))
            row['status'] = SKIPPED
            rows[name] = row
        else:
            todo.append((path, name))
    if todo:
        rows.update(Fleet(ray, args, todo, progress).run())
    ordered = [rows[name] for _, name in jobs]
    write_summary(summary_path, ordered)
    return ordered


def check_fleet_args(args):
    """Refuse out-of-range flags of `segtrack-fleet` and `segtrack-bag` before Ray starts."""
    if args.cpus_per_task <= 0:
        raise UsageError(f'--cpus-per-task must be positive, got {args.cpus_per_task:g}')
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        raise UsageError(f'--gpus-per-task cannot be negative, got {args.gpus_per_task:g}')
    check_args(args)
    check_namespace(args.namespace)


def work(args, progress=True):
    """Run the job of parsed `args` on the local Ray, or the cluster of `--address`; the rows."""
    check_fleet_args(args)
    ray = import_ray(local=args.address is None)
    jobs = plan(args.inputs, args.output_dir)  # its errors before Ray starts
    # A caller connected already (a Python program) keeps its Ray; with every bag done, no Ray.
    if ray.is_initialized() or all(is_done(args.output_dir, name) for _, name in jobs):
        return run(args, ray, progress)
    if args.address is None:
        start_local_ray(ray)
    else:
        join_cluster(ray, args.address)
    # Ray's driver aborts on SIGTERM; as Ctrl-C instead, it stops the workers and Ray cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args, ray, progress)
    finally:
        ray.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Entry point of `segtrack-fleet`: the table, then exit 1 when a bag failed."""
    args, rows = run_main(
        build_parser(), argv, work, errors=(BagError,),
        interrupted=lambda args: f"interrupted; finished bags are in '{args.output_dir}'")
    for line in table(rows):
        print(line)
    counts = {status: sum(row['status'] == status for row in rows)
              for status in ('done', SKIPPED, 'failed')}
    print(f"segtrack-fleet: {counts['done']} bag(s) done, {counts[SKIPPED]} {SKIPPED}, "
          f"{counts['failed']} failed; summary in {Path(args.output_dir) / 'summary.csv'}")
    if counts['failed']:
        sys.exit(1)


if __name__ == '__main__':
    main()

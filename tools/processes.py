"""Start the package's executables and wait on the ROS graph: for the demo, bench and soak."""

from pathlib import Path
import signal
import subprocess
import sys
import time

BIN = Path(sys.executable).parent


def start(executable, namespace, log=None, **parameters):
    """Start one of the package's executables in `namespace`; its output goes to `log`."""
    command = [str(BIN / executable), '--ros-args', '-r', f'__ns:={namespace}']
    for name, value in parameters.items():
        command += ['-p', f'{name}:={value}']
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None)


def wait_for(predicate, timeout):
    """Poll until `predicate()` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def stop(*processes, timeout=15.0):
    """Interrupt the processes still running (None is skipped) and wait for each to end."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=timeout)

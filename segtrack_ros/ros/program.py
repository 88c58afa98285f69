"""How the package's nodes run as programs: one `main` shape for `ros2 run` and the scripts."""

import ctypes
import gc
import logging
import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from segtrack_ros.ros.transport import apply_large_data_profile


def run_node(program, make_node, startup_errors, args=None):
    """
    Spin the node `make_node()` builds until Ctrl-C, SIGTERM or shutdown, then clean up.

    A `startup_errors` exception while building it is one line on stderr and exit code 1. Code
    that also runs on Humble and Jazzy: no `with rclpy.init()`, which is Kilted's.
    """
    apply_large_data_profile()
    rclpy.init(args=args)
    # Made before the node can be seen: an executor made after a signal has shut the context
    # down fails half-built, and its finaliser then prints a traceback on the way out.
    executor = SingleThreadedExecutor()
    node, code = None, 0
    try:
        node = make_node()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except startup_errors as error:
        print(f'{program}: error: {error}', file=sys.stderr)
        code = 1
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C during start: rclpy shut the context down under the half-made node, which
        # then fails on its next call. A stop, not an error.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    # Everything of ours is closed. The interpreter's own teardown then spends seconds unloading
    # torch (bench/node-notes.md), past the 2 s in which a stopped node should be gone: skip it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def return_freed_memory():
    """
    Hand the memory of freed objects back to the system.

    glibc keeps freed heap memory for its own reuse: without `malloc_trim` a cleaned-up model
    stayed in the RSS, and the next configure grew it further (bench/node-notes.md). Elsewhere
    than glibc there is nothing to call.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass

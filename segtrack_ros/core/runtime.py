"""Process-wide settings for running ultralytics here, applied by each program's `main()`."""

import os


def usable_cores():
    """Return the number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def apply_process_defaults():
    """
    Keep ultralytics off the network and torch on every usable core, unless the user chose.

    No online checks, telemetry or package auto-install (weights of official names are still
    fetched when missing). Importing ultralytics sets OMP_NUM_THREADS=1 when it is unset (a
    training default), which leaves CPU inference on one core, so this must run before torch or
    ultralytics is imported. Variables the user set are kept.
    """
    os.environ.setdefault('YOLO_OFFLINE', '1')
    os.environ.setdefault('YOLO_AUTOINSTALL', 'false')
    os.environ.setdefault('OMP_NUM_THREADS', str(usable_cores()))

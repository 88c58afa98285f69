"""
Deployment models built on this machine from a `.pt` model, once per setting, and cached.

`exported_model(model_file, spec, cache_dir)` returns the path of `model_file` exported with
ultralytics for `spec` (format, imgsz, half, batch, device). The cache is keyed by everything
that shapes an export: the model file's content, the settings (imgsz and batch for a TensorRT
engine only: the other formats are dynamic, one graph for every size and batch), the device (an
engine only runs on the GPU model it was built on) and the versions of ultralytics, torch and the
format's runtime. An export is made in a hidden temporary folder inside the cache and renamed
into place when complete, so an interrupted export is never loaded; a lock file makes processes
that start at once wait for one export instead of each making its own. The same shape as Isaac
ROS's TensorRT node, which builds its engine from the model file on first start and reuses it
afterwards.
"""

from contextlib import contextmanager
from dataclasses import asdict, dataclass
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
from pathlib import Path
import shutil
import tempfile
import time

from segtrack_ros.core.errors import SegmenterError

FORMATS = ('onnx', 'openvino', 'engine', 'torchscript')
# What ultralytics names each export, after the model's stem.
SUFFIXES = {'onnx': '.onnx', 'openvino': '_openvino_model', 'engine': '.engine',
            'torchscript': '.torchscript'}
# Modules each format needs to export and to run (module, pip package). Checked up front:
# ultralytics would otherwise try to pip-install them in the middle of a configure.
RUNTIMES = {
    'onnx': (('onnx', 'onnx'), ('onnxslim', 'onnxslim'), ('onnxruntime', 'onnxruntime')),
    'openvino': (('openvino', 'openvino'),),
    'engine': (('tensorrt', 'tensorrt'), ('onnx', 'onnx'), ('onnxslim', 'onnxslim')),
    'torchscript': (),
}
PARTIAL = '.partial-'  # prefix of the folders exports are made in


@dataclass(frozen=True)
class ExportSpec:
    """
    The settings an export is made for.

    `batch` is the most frames inferred at once (the number of cameras). ONNX, OpenVINO and
    TorchScript exports are dynamic: they take the `.pt`'s own input (the frame letterboxed to the
    smallest stride multiple, not a square), so they find what the `.pt` finds, and a batch with
    fewer frames is not padded. A TensorRT engine is dynamic (any batch up to `batch`) only for
    several cameras: a static engine is TensorRT's fastest. `device` is a resolved torch device.
    """

    kind: str
    imgsz: int = 640
    half: bool = False
    batch: int = 1
    device: str = 'cpu'

    @property
    def dynamic(self):
        """Tell whether the export takes any input size, and batches of any size up to `batch`."""
        return self.kind != 'engine' or self.batch > 1


def default_cache_dir():
    """Return where exports are kept: `$ROS_HOME/segtrack_ros/exports` or the user's cache."""
    ros_home = os.environ.get('ROS_HOME')
    if ros_home:
        return Path(ros_home).expanduser() / 'segtrack_ros' / 'exports'
    cache = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(cache) / 'segtrack_ros' / 'exports'


def check_spec(spec):
    """Refuse (`SegmenterError`) an export that cannot be made or run here, before trying."""
    if spec.kind not in FORMATS:
        raise SegmenterError(
            f'export_format {spec.kind!r} is not one of {", ".join(FORMATS)} (empty runs '
            'the model as it is)')
    if spec.kind == 'engine' and not spec.device.startswith('cuda'):
        raise SegmenterError(
            f'export_format engine (TensorRT) needs a CUDA GPU, and device is {spec.device}: '
            'on a CPU use export_format openvino or onnx')
    if spec.kind == 'openvino' and spec.device != 'cpu':
        raise SegmenterError(
            f'export_format openvino runs on the CPU, not on {spec.device}: use device cpu, or '
            'export_format engine or onnx on a CUDA GPU')
    if spec.kind == 'torchscript' and spec.half and spec.device == 'cpu':
        raise SegmenterError('export_format torchscript with half needs a CUDA GPU: '
                             'set half false on a CPU')
    missing = [package for module, package in RUNTIMES[spec.kind]
               if importlib.util.find_spec(module) is None]
    if missing:
        raise SegmenterError(f"export_format {spec.kind} needs {', '.join(missing)}: "
                             f"pip install {' '.join(missing)}")


def export_identity(model_file, spec):
    """Return everything that shapes the export of `model_file` for `spec`, as a dict."""
    import torch

    digest = hashlib.sha256()
    with open(model_file, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    device = spec.device
    if device.startswith('cuda'):
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        device = f'{torch.cuda.get_device_name(index)} sm_{major}{minor}'
    modules = ['ultralytics', 'torch'] + [module for module, _ in RUNTIMES[spec.kind]]
    settings = asdict(spec)
    if spec.kind != 'engine':
        # Dynamic in size and batch: the same graph whatever imgsz and batch it was traced at
        # (only its metadata differs, which ultralytics reads for fixed exports alone), so a
        # camera count or imgsz of its own does not export the same model again.
        del settings['imgsz'], settings['batch']
    return {'model_sha256': digest.hexdigest(), **settings, 'dynamic': spec.dynamic,
            'device': device,
            'versions': {name: importlib.import_module(name).__version__ for name in modules}}


def export_path(model_file, spec, cache_dir):
    """Return where the export of `model_file` for `spec` is (or will be) kept in `cache_dir`."""
    identity = json.dumps(export_identity(model_file, spec), sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(cache_dir) / f'{Path(model_file).stem}-{key}{SUFFIXES[spec.kind]}'


def exported_model(model_file, spec, cache_dir, log=None):
    """
    Return the path of `model_file` (a `.pt`) exported for `spec`, exporting it when not cached.

    `log` (a callable taking one line) hears whether the export was found or made. Raises
    `SegmenterError` naming the reason when the export cannot be made.
    """
    log = log or (lambda line: None)
    check_spec(spec)
    path = export_path(model_file, spec, cache_dir)
    if path.exists():
        log(f'{spec.kind} export of {model_file} found in the cache: {path}')
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / '.lock'):
            if path.exists():  # another process made it while this one waited
                log(f'{spec.kind} export of {model_file} made by another process: {path}')
                return path
            for stale in path.parent.glob(PARTIAL + '*'):  # left by a killed export
                shutil.rmtree(stale, ignore_errors=True)
            log(f'exporting {model_file} to {spec.kind} (imgsz {spec.imgsz}, batch '
                f"{spec.batch}{' dynamic' if spec.dynamic else ''}, half {spec.half}, "
                f'{spec.device}), once: kept in {path.parent}')
            start = time.monotonic()
            _export_into(path, model_file, spec)
    except OSError as error:
        raise SegmenterError(
            f'export cache {path.parent} cannot be used ({error}): set export_dir to a '
            'writable folder') from error
    log(f'exported in {time.monotonic() - start:.1f} s: {path}')
    return path


def _export_into(path, model_file, spec):
    """Export in a temporary folder beside `path`, then rename the result to `path`."""
    with tempfile.TemporaryDirectory(prefix=PARTIAL, dir=path.parent) as work:
        # ultralytics writes the export beside the model file it reads: a copy keeps it out of
        # the model's own folder (possibly read-only) and away from `path` until it is complete.
        source = Path(work) / f'{path.stem.removesuffix(SUFFIXES[spec.kind])}.pt'
        shutil.copyfile(model_file, source)
        try:
            made = Path(_export(source, spec))
        except Exception as error:  # ultralytics and the runtimes raise many types
            raise SegmenterError(
                f'exporting {model_file} to {spec.kind} failed: {error}') from error
        os.rename(made, path)


def _export(source, spec):
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    options = {'format': spec.kind, 'imgsz': spec.imgsz, 'batch': spec.batch,
               'dynamic': spec.dynamic, 'device': spec.device, 'verbose': False}
    if spec.half:
        options['quantize'] = 16
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # its banner and "Predict:" hints name the temporary folder
    try:
        return YOLO(str(source), task='segment').export(**options)
    finally:
        LOGGER.setLevel(level)


@contextmanager
def _locked(lock_file):
    """Hold an exclusive lock on `lock_file` (across processes) for the block."""
    with open(lock_file, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

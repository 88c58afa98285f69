"""
Segmentation with or without tracking, one tracker per stream; it returns `Detections`.

This is the only module that runs ultralytics' model. Which model and device (`models`), its
export (`exports`) and its trackers (`tracking`) are chosen and made in their own modules.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from segtrack_ros.core.detections import detections_from_result
from segtrack_ros.core.errors import SegmenterError
from segtrack_ros.core.exports import (check_spec, default_cache_dir, export_path, exported_model,
                                       ExportSpec)
from segtrack_ros.core.models import BUNDLED_MODEL, load_model, local_path, resolve_device
from segtrack_ros.core.runtime import usable_cores
from segtrack_ros.core.tracking import check_tracker, DEFAULT_TRACKER, StreamTrackers

__all__ = ('BUNDLED_MODEL', 'MODES', 'Segmenter', 'SegmenterConfig', 'SegmenterError',
           'check_tracker', 'load_model', 'resolve_device')

MODES = ('predict', 'track')


@dataclass(frozen=True)
class SegmenterConfig:
    """
    Everything that decides what the segmenter returns.

    >>> Segmenter(SegmenterConfig(model='yolov8n-seg.pt', mode='predict', conf=0.4))
    """

    model: str = 'yolov8n-seg.pt'
    device: str = 'auto'
    mode: str = 'track'
    tracker: str = DEFAULT_TRACKER
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int = 640
    half: bool = False
    max_det: int = 300
    classes: tuple = ()
    retina_masks: bool = False
    export_format: str = ''  # '' runs `model` as it is; else export it once (core.exports)
    export_dir: str = ''  # where exports are kept; '' = exports.default_cache_dir()
    batch: int = 1  # the most frames inferred at once (the number of cameras)


class Segmenter:
    """
    Segment frames with a YOLO model, with per-stream multi-object tracking in track mode.

    Each stream name has its own tracker (`tracking.StreamTrackers`), so frames of several
    cameras can be interleaved, or inferred together as one batch, without mixing their tracks
    or ids. Not thread-safe: one caller at a time.

    >>> segmenter = Segmenter(SegmenterConfig(model='shapes-seg.pt', device='cpu'))
    >>> detections = segmenter.process(frame, stream='front_camera')
    >>> front, rear = segmenter.process_batch([frame_a, frame_b], ['front', 'rear'])
    """

    def __init__(self, config, log=None):
        import torch

        self._log = log or (lambda line: None)  # hears what was exported or adopted, one line
        self._threads = torch.get_num_threads()  # ultralytics lowers it when it picks the device
        self.config = replace(config, device=resolve_device(config.device))
        if config.mode == 'track':
            check_tracker(config.tracker)  # before the model loads: a typo fails at once
        self._tracking = None
        self.fixed_imgsz = None  # (h, w) of an export whose input size was fixed at export
        # Every torch call runs on this one thread, whichever thread calls the segmenter: the
        # OpenMP runtime (libgomp) gives each calling thread its own worker pool, and once more
        # pool threads exist than cores, the workers sleep between parallel regions instead of
        # spinning, which slows every frame (figures in bench/node-notes.md).
        self._torch_thread = ThreadPoolExecutor(1, thread_name_prefix='segmenter')
        try:
            self._model = self._on_torch_thread(self._load_model)
            self._on_torch_thread(self._warm_up)
            self._on_torch_thread(self._openvino_precision)
            self._on_torch_thread(self._adopt_fixed_shape)
            self._on_torch_thread(self._leave_cores_to_the_runtime)
            if config.mode == 'track':
                self._on_torch_thread(self._set_tracking, config.tracker)
        except BaseException:
            self._torch_thread.shutdown()  # a failed configure must not leave a thread behind
            raise

    @property
    def leaves_cpu_free(self):
        """Tell whether inference leaves CPU time to other threads: a GPU, or spare cores."""
        return self.config.device != 'cpu' or (
            self._runs_on_torch() and self._threads < usable_cores())

    @property
    def torch_threads(self):
        """Threads torch computes with: one when another runtime runs the model."""
        return self._threads

    @property
    def class_names(self):
        """Class names of the model, by class id."""
        return self._model.names

    def update(self, **changes):
        """Change settings from the next frame on; a new tracker config resets every track."""
        if changes.keys() & {'device', 'model', 'export_format', 'export_dir', 'batch'}:
            raise SegmenterError('model and device are fixed once the segmenter is made')
        if self.fixed_imgsz:
            changes.pop('imgsz', None)  # the model runs at its own size (see _adopt_fixed_shape)
        new = replace(self.config, **changes)
        if new.mode == 'track' and (new.tracker != self.config.tracker
                                    or self.config.mode != 'track'):
            self._on_torch_thread(self._set_tracking, new.tracker)
        elif new.mode != 'track' and self._tracking is not None:
            self._on_torch_thread(self._set_tracking, None)
        self.config = new

    def reset(self, stream=None):
        """Forget the tracks of `stream`, or of every stream; ids start again at 1."""
        if self._tracking is not None:
            self._tracking.reset(stream)

    def release(self):
        """Free the model (and its GPU memory); the segmenter cannot be used afterwards."""
        def drop_model():
            import torch

            self._model = None
            self._tracking = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        self._on_torch_thread(drop_model)
        self._torch_thread.shutdown()

    def process(self, frame, stream='default'):
        """Segment one BGR frame (H×W×3 uint8) and return its `Detections` at the frame's size."""
        return self.process_batch([frame], [stream])[0]

    def process_batch(self, frames, streams):
        """
        Segment frames of different streams as one batch; return their `Detections` in order.

        `streams` names the stream of each frame (each at most once): in track mode each stream's
        own tracker is updated with its frame's result.
        """
        if len(set(streams)) != len(streams):
            raise ValueError(f'one frame per stream in a batch, got streams {list(streams)}')
        return self._on_torch_thread(self._process, list(frames), list(streams))

    def _on_torch_thread(self, function, *args):
        return self._torch_thread.submit(function, *args).result()

    def _process(self, frames, streams):
        from segtrack_ros.core.crop_predictor import CropPredictor  # masks made box by box

        config = self.config
        options = {
            'conf': config.conf, 'iou': config.iou, 'imgsz': config.imgsz,
            'max_det': config.max_det, 'classes': list(config.classes) or None,
            'retina_masks': config.retina_masks, 'device': config.device, 'verbose': False,
            'predictor': CropPredictor, 'mode': config.mode}  # track: the tracker hooks act
        if config.half:
            options['quantize'] = 16
        results = self._model.predict(frames, **options)
        tracked = config.mode == 'track'
        if tracked:
            results = self._tracking.update(results, streams)
        self._restore_threads()
        return [detections_from_result(result, tracked) for result in results]

    def _set_tracking(self, name):
        """Start fresh trackers of config `name` on the predictor (None: stop tracking)."""
        tracking = None if name is None else StreamTrackers(name, self._model.predictor)
        if self._tracking is not None:
            self._tracking.stop()
        self._tracking = tracking
        if tracking is not None:
            tracking.start()

    def _warm_up(self):
        """Run one blank frame, so that the predictor exists and a broken model fails here."""
        mode = self.config.mode
        self.config = replace(self.config, mode='predict')
        try:
            self._process([np.zeros((self.config.imgsz, self.config.imgsz, 3), np.uint8)],
                          ['warm-up'])
        except Exception as error:  # a model that loads but cannot run: report it at start
            raise SegmenterError(self._not_segmentation() or (
                f"model '{self.config.model}' cannot run: {error}")) from error
        finally:
            self.config = replace(self.config, mode=mode)

    def _load_model(self):
        """Load `config.model`, or its export for `config.export_format` (made when not cached)."""
        config = self.config
        if not config.export_format:
            return load_model(config.model)
        if not config.model.endswith('.pt'):
            raise SegmenterError(
                f'export_format {config.export_format} exports a .pt model, and model '
                f"'{config.model}' is not one: give the .pt, or set export_format '' to run "
                'the model as it is')
        spec = ExportSpec(config.export_format, config.imgsz, config.half, config.batch,
                          config.device)
        check_spec(spec)
        cache = Path(config.export_dir or default_cache_dir()).expanduser()
        source = local_path(config.model)
        if not source.exists() or not export_path(source, spec, cache).exists():
            # not cached: the .pt is fetched (an official name) and checked before exporting
            source = Path(load_model(config.model).ckpt_path)
        return load_model(str(exported_model(source, spec, cache, self._log)))

    def _not_segmentation(self):
        """Return what the loaded export is when it is not a segmentation model, or None."""
        import torch

        backend = getattr(self._model.predictor, 'model', None)
        if backend is None or getattr(backend, 'format', 'pt') == 'pt':
            return None  # a .pt's task is known at load (load_model)
        task = (backend.metadata or {}).get('task')
        if task and task != 'segment':
            return (f"model '{self.config.model}' is a {task} model (says its export metadata), "
                    'not a segmentation one (e.g. yolov8n-seg)')
        outputs = backend(torch.zeros(1, 3, *self._model.predictor.imgsz))
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 2:
            count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
            return (f"model '{self.config.model}' has {count} output(s) and no mask prototypes: "
                    'a detect or pose export, not a segmentation one (e.g. yolov8n-seg)')
        return None

    def _openvino_precision(self):
        """
        Run an OpenVINO model in full precision unless `half` is set.

        OpenVINO's CPU plugin picks bf16 on CPUs that have it, which moves boxes and mask edges
        by a pixel or more: without `half`, an export finds what its `.pt` finds.
        """
        backend = self._model.predictor.model
        if getattr(backend, 'format', None) != 'openvino' or self.config.half:
            return
        runtime = backend.backend  # ultralytics' OpenVINO backend: recompiled with the hint
        runtime.compile_model = partial(runtime.compile_model, config={
            'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'})
        path = Path(self._model.model)
        xml = path if path.is_file() else next(path.glob('*.xml'))
        runtime.ov_compiled_model = runtime.compile_model(runtime.ov.Core().read_model(xml))

    def _adopt_fixed_shape(self):
        """
        Take the input size of an export whose size was fixed at export, and say so.

        Ultralytics runs such a model at its own size whatever imgsz it is given; a fixed batch is
        split or padded by ultralytics' AutoBackend, which is said too.
        """
        backend = self._model.predictor.model
        if getattr(backend, 'format', 'pt') == 'pt' or getattr(backend, 'dynamic', False):
            return
        name, size = self.config.model, self.config.imgsz
        height, width = backend.imgsz
        if (height, width) != (size, size):
            self._log(f"model '{name}' takes {width}x{height} inputs (fixed at export): imgsz "
                      f'{size} is not used; export at imgsz {size} to run at that size')
        self.fixed_imgsz = height, width
        self.config = replace(self.config, imgsz=max(height, width))
        # As ultralytics' AutoBackend: formats other than TorchScript take exactly their batch.
        if backend.format != 'torchscript' and backend.batch != self.config.batch:
            self._log(f"model '{name}' runs batches of exactly {backend.batch} frame(s) (fixed at "
                      f'export): larger batches run in parts, smaller ones are padded with blank '
                      f'frames; export with batch {self.config.batch} to fit')

    def _runs_on_torch(self):
        return self._model.predictor.model.format in ('pt', 'torchscript')

    def _leave_cores_to_the_runtime(self):
        """
        Give torch one thread when a runtime of its own (OpenVINO, ONNX Runtime...) runs the model.

        Torch then only pre- and post-processes; with a thread per core, its OpenMP workers spin
        after each of those steps and stall on a busy core, taking time from the runtime's own
        threads (bench/exports.md).
        """
        if not self._runs_on_torch():
            self._threads = 1
            self._restore_threads()

    def _restore_threads(self):
        import torch

        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

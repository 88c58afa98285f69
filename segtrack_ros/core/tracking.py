"""
Multi-object tracking per stream, with the hooks ultralytics' own tracking gives a tracker.

`model.track(frame, persist=True)` keeps one tracker per model; `StreamTrackers` keeps one per
stream name, so that frames of several cameras, inferred together as one batch by the segmenter,
never mix their tracks or ids. Each stream's tracker gets what `model.track` would give it on that
camera's frames alone, through ultralytics' own code: the tracker config as `on_predict_start`
reads it, the predictor set-up of the tracker class (`setup_predictor`), the detector's features
for native ReID (`model: auto`, a forward pre-hook on the detection head, split per frame of the
batch by the predictor), and `on_predict_postprocess_end`, which computes the per-frame extras
(`compute_frame_extras`) and updates each tracker with its frame's result.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from segtrack_ros.core.errors import SegmenterError

# The default of the node and the CLIs, a config bundled with the package (its comments say why).
DEFAULT_TRACKER = 'tracktrack-reid.yaml'
BUNDLED_TRACKERS = Path(__file__).resolve().parents[1] / 'data'
# Tracker types that read `with_reid` and `model` (ultralytics' on_predict_start).
REID_TRACKERS = ('botsort', 'tracktrack', 'deepocsort')
# What ultralytics uses for `model: auto` when the detector has no torch Detect head (exports).
AUTO_FALLBACK_REID = 'yolo26n-cls.pt'


def check_tracker(name):
    """
    Return the path of tracker config `name` (e.g. `tracktrack.yaml`, or a path to a yaml).

    A path that exists is taken as it is; other names are configs bundled with the package
    (`DEFAULT_TRACKER`) or ultralytics' own (`tracktrack.yaml`, `bytetrack.yaml`, ...).

    Raises `SegmenterError` when tracking cannot run: the `lap` package is missing (ultralytics
    would try to install it at run time), the file cannot be found or is not a tracker config, or
    its ReID model (`with_reid: true`, `model` other than `auto`) is not on this machine and
    cannot be downloaded (an unknown name, or offline). Refused up front rather than failing on
    every frame.
    """
    if importlib.util.find_spec('lap') is None:
        raise SegmenterError(
            "tracking needs the 'lap' package: pip install lap (or use mode predict)")
    from ultralytics.trackers.track import TRACKER_MAP

    settings, path = _load_settings(name)
    kind = settings.get('tracker_type')
    if kind not in TRACKER_MAP:
        raise SegmenterError(
            f"tracker '{name}': tracker_type {kind!r} is not one of {', '.join(TRACKER_MAP)}")
    reid_model = str(settings.get('model', 'auto'))
    if (kind in REID_TRACKERS and settings.get('with_reid') and reid_model != 'auto'
            and not _on_this_machine(reid_model)):
        _check_downloadable(name, reid_model)
    return path


def _on_this_machine(model):
    """Tell whether ultralytics finds model file `model` here (a path, or in its weights dir)."""
    from ultralytics.utils import SETTINGS

    return Path(model).expanduser().exists() or (Path(SETTINGS['weights_dir']) / model).exists()


def _online():
    """Tell whether ultralytics may download (it found a network, and YOLO_OFFLINE is not set)."""
    from ultralytics.utils import ONLINE

    return ONLINE


def _check_downloadable(name, model):
    """Raise `SegmenterError` unless ultralytics can fetch `model` (of tracker `name`) now."""
    from ultralytics.trackers.utils.reid import REID_ASSETS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    if model not in GITHUB_ASSETS_NAMES and model not in REID_ASSETS:
        raise SegmenterError(
            f"tracker '{name}': ReID model '{model}' not found: give the path of a "
            'classification or ReID model (.pt, .onnx, ...), or model: auto (the detector '
            'features)')
    if not _online():
        raise SegmenterError(
            f"tracker '{name}': ReID model '{model}' is not on this machine and cannot be "
            'downloaded offline: give the path of a local model, or model: auto')


def _load_settings(name):
    """Return the settings (a dict) and the path of tracker config `name`."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if not str(name).endswith(('.yaml', '.yml')):
        raise SegmenterError(f"tracker '{name}' must be a .yaml file, e.g. tracktrack.yaml")
    bundled = BUNDLED_TRACKERS / str(name)
    path = (str(bundled) if not Path(name).exists() and bundled.is_file()
            else check_yaml(name, hard=False))
    if not path:
        raise SegmenterError(
            f"tracker '{name}' not found: use {DEFAULT_TRACKER}, tracktrack.yaml, "
            'bytetrack.yaml, botsort.yaml, ocsort.yaml, deepocsort.yaml, fasttrack.yaml or a path')
    try:
        settings = YAML.load(path) or {}
    except Exception as error:  # a YAML syntax error surfaces as several parser types
        raise SegmenterError(f"tracker '{name}' is not valid YAML: {error}") from error
    if not isinstance(settings, dict):
        raise SegmenterError(f"tracker '{name}' must be a YAML mapping with a tracker_type")
    return settings, path


def has_native_features(predictor):
    """Tell whether the predictor's model is a torch YOLO whose head ReID `auto` can hook."""
    import torch
    from ultralytics.nn.modules.head import Detect

    model = getattr(predictor.model, 'model', None)  # AutoBackend -> torch model (.pt weights)
    return (isinstance(model, torch.nn.Module)
            and isinstance(getattr(model, 'model', [None])[-1], Detect)
            and not model.model[-1].end2end)


class StreamTrackers:
    """
    One ultralytics tracker per stream name, all of one tracker config, on one predictor.

    A ReID model other than `auto` is loaded once here and shared by the streams' trackers (it
    keeps no per-stream state). `start` installs the predictor hooks, `stop` removes them;
    predictions must run with `mode='track'`, as `model.track` runs them, for the hooks to act.

    >>> trackers = StreamTrackers('tracktrack.yaml', model.predictor)
    >>> trackers.start()
    >>> results = trackers.update(model.predict(frames, mode='track'), ['front', 'rear'])
    """

    def __init__(self, name, predictor):
        """Read tracker config `name` and load its ReID model; `SegmenterError` if it can't."""
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import IterableSimpleNamespace

        check_tracker(name)
        self.name = name
        self.predictor = predictor
        settings = IterableSimpleNamespace(**_load_settings(name)[0])
        settings.device = predictor.device  # any ReID model runs where the detector does
        self.tracker_class = TRACKER_MAP[settings.tracker_type]
        reid = settings.tracker_type in REID_TRACKERS and getattr(settings, 'with_reid', False)
        auto = reid and getattr(settings, 'model', 'auto') == 'auto'
        self.native_features = auto and has_native_features(predictor)
        if auto and not self.native_features and (
                _on_this_machine(AUTO_FALLBACK_REID) or _online()):
            settings.model = AUTO_FALLBACK_REID  # as ultralytics does for exported detectors
        # Else (offline, an exported detector): `auto` with no features; the trackers then
        # match by motion alone, as they do for any detection without appearance.
        self.settings = settings
        self.encoder = None
        if reid and settings.model != 'auto':
            if not _on_this_machine(settings.model):
                _check_downloadable(name, settings.model)
            self.encoder = _load_encoder(name, settings)
        self._trackers = {}

    def start(self):
        """Install what the tracker type asks of the predictor, as `on_predict_start` does."""
        predictor = self.predictor
        _remove_hooks(predictor)
        if self.native_features:
            def pre_hook(module, inputs):
                # the head's input feature maps, for the whole batch; plain predict takes none
                predictor._feats = list(inputs[0]) if predictor.args.mode == 'track' else None

            predictor._hook = predictor.model.model.model[-1].register_forward_pre_hook(pre_hook)
        if hasattr(self.tracker_class, 'setup_predictor'):
            self.tracker_class.setup_predictor(predictor)

    def stop(self):
        """Remove the predictor hooks of `start`; the trackers' state stays."""
        _remove_hooks(self.predictor)

    def reset(self, stream=None):
        """Forget the tracks of `stream`, or of every stream; ids start again at 1."""
        if stream is None:
            self._trackers.clear()
        else:
            self._trackers.pop(stream, None)

    def update(self, results, streams):
        """
        Update each stream's tracker with its result; return the tracked results, in order.

        `on_predict_postprocess_end` runs on a view of the predictor whose batch is a stream
        source of one tracker per frame: each result (with its own features, `result.feats`)
        and each frame's extras go to that frame's stream's tracker, as `model.track` would give
        them to the stream's frames alone.
        """
        from ultralytics.trackers.track import on_predict_postprocess_end

        for stream in streams:
            if stream not in self._trackers:
                self._trackers[stream] = self._new_tracker()
        batch = _BatchView(self.predictor, [self._trackers[stream] for stream in streams],
                           list(results))
        on_predict_postprocess_end(batch, persist=True)
        return batch.results

    def _new_tracker(self):
        if self.encoder is None:
            return self.tracker_class(args=self.settings)
        # Made without ReID (which would load the model again), then given the shared one:
        # `with_reid` only decides, in the trackers' constructors, whether to build an encoder.
        tracker = self.tracker_class(args=_with(self.settings, with_reid=False))
        tracker.args, tracker.encoder = self.settings, self.encoder
        return tracker


class _BatchView:
    """The predictor as the track callbacks see it when every frame of its batch is a stream."""

    def __init__(self, predictor, trackers, results):
        self._predictor = predictor
        self.trackers = trackers
        self.results = results
        self.dataset = SimpleNamespace(mode='stream', bs=len(results))
        self.vid_path = [None] * len(results)

    def __getattr__(self, name):
        return getattr(self._predictor, name)


def _load_encoder(name, settings):
    """Load the ReID model of tracker config `name` as ultralytics does, or `SegmenterError`."""
    from ultralytics.trackers.utils.reid import build_encoder

    try:
        return build_encoder(True, settings.model, settings.device)
    except Exception as error:  # missing download, bad file: torch and ultralytics raise many
        raise SegmenterError(
            f"tracker '{name}': ReID model '{settings.model}' cannot be loaded "
            f'({error.__class__.__name__}: {error}); offline, give the path of a local model '
            'or use model: auto') from error


def _remove_hooks(predictor):
    """Undo `StreamTrackers.start` (and a previous ultralytics tracking set-up) on a predictor."""
    predictor._feats = None
    hook = predictor.__dict__.pop('_hook', None)
    if hook is not None:
        hook.remove()
    if '_orig_postprocess' in predictor.__dict__:  # TrackTrack's raw-predictions capture
        predictor.postprocess = predictor.__dict__.pop('_orig_postprocess')


def _with(settings, **changes):
    """Return a copy of tracker settings with `changes`."""
    return type(settings)(**{**vars(settings), **changes})

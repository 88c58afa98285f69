"""
Multi-object tracking per stream, through ultralytics' own track callbacks.

Ultralytics keeps one tracker per model for numpy frames; `StreamTrackers` keeps one per stream
name and updates it with that stream's results, so frames of several cameras can be interleaved,
or inferred together as one batch, without mixing their tracks or ids.
"""

import importlib.util
from types import SimpleNamespace

from segtrack_ros.core.errors import SegmenterError


def check_tracker(name):
    """
    Return the path of tracker config `name` (e.g. `bytetrack.yaml`, or a path to a yaml).

    Raises `SegmenterError` when tracking cannot run: the `lap` package is missing (ultralytics
    would try to install it at run time), the file cannot be found, or it names a tracker that
    needs hooks into ultralytics' own predictor (TrackTrack, ReID), which per-stream batched
    tracking cannot give it. Refused up front rather than failing on every frame.
    """
    if importlib.util.find_spec('lap') is None:
        raise SegmenterError(
            "tracking needs the 'lap' package: pip install lap (or use mode predict)")
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if not str(name).endswith(('.yaml', '.yml')):
        raise SegmenterError(f"tracker '{name}' must be a .yaml file, e.g. bytetrack.yaml")
    path = check_yaml(name, hard=False)
    if not path:
        raise SegmenterError(
            f"tracker '{name}' not found: use bytetrack.yaml, botsort.yaml, ... or a path")
    try:
        settings = YAML.load(path) or {}
    except Exception as error:  # a YAML syntax error surfaces as several parser types
        raise SegmenterError(f"tracker '{name}' is not valid YAML: {error}") from error
    if not isinstance(settings, dict):
        raise SegmenterError(f"tracker '{name}' must be a YAML mapping with a tracker_type")
    kind = settings.get('tracker_type')
    if kind not in TRACKER_MAP:
        raise SegmenterError(
            f"tracker '{name}': tracker_type {kind!r} is not one of {', '.join(TRACKER_MAP)}")
    tracker_class = TRACKER_MAP[kind]
    if (settings.get('with_reid') or hasattr(tracker_class, 'setup_predictor')
            or hasattr(tracker_class, 'compute_frame_extras')):
        raise SegmenterError(
            f"tracker '{name}' ({kind}{', ReID' if settings.get('with_reid') else ''}) needs "
            'hooks into the model that per-camera tracking cannot give it: use '
            'bytetrack.yaml, botsort.yaml (with_reid: false), ocsort.yaml or fasttrack.yaml')
    return path


class StreamTrackers:
    """
    One ultralytics tracker per stream name, made from one tracker config.

    >>> trackers = StreamTrackers('bytetrack.yaml', device='cpu')
    >>> results = trackers.update(results, ['front', 'rear'])
    """

    def __init__(self, name, device):
        check_tracker(name)
        self.name = name
        self.device = device
        self._trackers = {}

    def reset(self, stream=None):
        """Forget the tracks of `stream`, or of every stream; ids start again at 1."""
        if stream is None:
            self._trackers.clear()
        else:
            self._trackers.pop(stream, None)

    def update(self, results, streams):
        """
        Update each stream's tracker with its result; return the tracked results, in order.

        Ultralytics gives a list of frames one tracker; its callbacks give a stream source one
        tracker per frame. They run here on a stand-in predictor holding the streams' trackers,
        so that tracking, confirmation and the tracked boxes are exactly those of `model.track`.
        """
        from ultralytics.trackers.track import on_predict_postprocess_end, on_predict_start

        for stream in streams:
            if stream not in self._trackers:
                fresh = self._stand_in(batch_size=1)
                on_predict_start(fresh)
                self._trackers[stream] = fresh.trackers[0]
        batch = self._stand_in(batch_size=len(results))
        batch.trackers = [self._trackers[stream] for stream in streams]
        batch.results = list(results)
        on_predict_postprocess_end(batch, persist=True)
        return batch.results

    def _stand_in(self, batch_size):
        return SimpleNamespace(
            args=SimpleNamespace(mode='track', task='segment', tracker=self.name),
            dataset=SimpleNamespace(mode='stream', bs=batch_size), device=self.device,
            vid_path=[None] * batch_size)

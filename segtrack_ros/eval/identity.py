"""
Identity over occlusions: every tracker ultralytics ships, on the scenes of `eval.occlusion`.

Each scene is inferred once (twice: without and with the detector's features for ReID `auto`),
then every tracker runs on those results exactly as the segmenter runs it (`StreamTrackers` on the
package's `CropPredictor` results), timed by itself. The figures come from `trackeval` (the
reference implementation of HOTA): HOTA, AssA, IDF1, ID switches and MOTA, with a mask IoU of at
least 0.5 for a match. A last check runs the real `Segmenter` and ultralytics' own
`model.track` loop on the first frames of a scene, for each tracker, and tells whether their ids
and boxes agree.

>>> rows = compare_trackers(['bytetrack.yaml', 'tracktrack.yaml'], BUNDLED_MODEL)
>>> print(markdown_table(rows))
"""

import tempfile
import time
from types import SimpleNamespace

import numpy as np

from segtrack_ros.core.detections import detections_from_result
from segtrack_ros.core.segmenter import load_model, Segmenter, SegmenterConfig
from segtrack_ros.core.tracking import check_tracker, DEFAULT_TRACKER, StreamTrackers
from segtrack_ros.eval.matching import FrameResult, MIN_AREA, MIN_IOU
from segtrack_ros.eval.occlusion import occlusion_scenes
from segtrack_ros.eval.synthetic import render_frame

SHIPPED = ('bytetrack', 'botsort', 'ocsort', 'deepocsort', 'fasttrack', 'tracktrack')
REID = '+reid'  # suffix of a shipped name: that config with `with_reid: true, model: auto`
ALL_TRACKERS = tuple(f'{kind}.yaml' for kind in SHIPPED) + tuple(
    f'{kind}.yaml{REID}' for kind in ('botsort', 'deepocsort', 'tracktrack')) + (DEFAULT_TRACKER,)
TIMING_SCENE = 'crowd'  # 20 instances a frame: the tracker's cost, not in the identity figures
CHECK_FRAMES = 40  # frames of the first scene on which the segmenter must equal model.track


def tracker_file(name, folder):
    """Return a tracker config path for `name`: itself, or for `x.yaml+reid` a ReID copy of x."""
    if not name.endswith(REID):
        return name
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    base = name[:-len(REID)]
    path = f'{folder}/{base[:-len(".yaml")]}-reid.yaml'
    YAML.save(path, {**YAML.load(check_yaml(base)), 'with_reid': True, 'model': 'auto'})
    return path


def similarity(truth, masks):
    """
    Return the mask IoU of each truth instance (rows) with each of `masks` (N×H×W, columns).

    Counted in the truth's id map (`synthetic.FrameTruth`): a mask's overlap with every instance
    is one histogram of the ids under it.
    """
    id_map = truth.id_map
    bins = int(id_map.max()) + 1
    truth_area = np.bincount(id_map.ravel(), minlength=bins)[truth.ids]
    if not len(masks):
        return np.zeros((len(truth.ids), 0))
    overlap = np.stack([np.bincount(id_map[mask], minlength=bins)[truth.ids] for mask in masks],
                       axis=1)
    union = truth_area[:, None] + masks.reshape(len(masks), -1).sum(1)[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)


def without_tiny_truths(truth, result, ious, min_area=MIN_AREA):
    """
    Drop truth instances of fewer than `min_area` pixels as "don't care", and what matches them.

    As `evaluate.without_tiny_instances`: a result that matches such an instance (IoU at least
    MIN_IOU) counts neither as found nor as a false positive. Returns the kept truth ids, result
    ids and their IoU matrix.
    """
    tiny = np.bincount(truth.id_map.ravel(), minlength=int(truth.id_map.max()) + 1)[
        truth.ids] < min_area
    keep = ~(ious[tiny] >= MIN_IOU).any(0)
    return truth.ids[~tiny], result.ids[keep], ious[~tiny][:, keep]


def identity_metrics(truths, results):
    """
    Compute trackeval's HOTA, Identity and CLEAR figures of one sequence (see module docstring).

    `truths` are `synthetic.FrameTruth`s and `results` `matching.FrameResult`s, one per frame;
    returns the per-sequence results of the three metrics, to be combined with `combine`.
    """
    from trackeval.metrics import CLEAR, HOTA, Identity

    kept = [without_tiny_truths(truth, result, similarity(truth, result.masks))
            for truth, result in zip(truths, results)]
    truths = [SimpleNamespace(ids=truth_ids) for truth_ids, _, _ in kept]
    results = [SimpleNamespace(ids=result_ids) for _, result_ids, _ in kept]
    truth_ids = np.unique(np.concatenate([truth.ids for truth in truths] + [[]])).astype(int)
    result_ids = np.unique(np.concatenate([result.ids for result in results] + [[]])).astype(int)
    data = {
        'num_timesteps': len(truths),
        'num_gt_dets': sum(len(truth.ids) for truth in truths),
        'num_tracker_dets': sum(len(result.ids) for result in results),
        'num_gt_ids': len(truth_ids), 'num_tracker_ids': len(result_ids),
        'gt_ids': [np.searchsorted(truth_ids, truth.ids) for truth in truths],
        'tracker_ids': [np.searchsorted(result_ids, result.ids) for result in results],
        'similarity_scores': [ious for _, _, ious in kept],
    }
    return {type(metric).__name__: (metric, metric.eval_sequence(data))
            for metric in (HOTA({'PRINT_CONFIG': False}),
                           Identity({'THRESHOLD': MIN_IOU, 'PRINT_CONFIG': False}),
                           CLEAR({'THRESHOLD': MIN_IOU, 'PRINT_CONFIG': False}))}


def combine(sequences):
    """Combine the `identity_metrics` of several sequences into the figures of the table."""
    combined = {name: metric.combine_sequences(
        {index: sequence[name][1] for index, sequence in enumerate(sequences)})
        for name, (metric, _) in sequences[0].items()}
    hota, identity, clear = combined['HOTA'], combined['Identity'], combined['CLEAR']
    return {'IDF1': float(identity['IDF1']), 'HOTA': float(np.mean(hota['HOTA'])),
            'AssA': float(np.mean(hota['AssA'])), 'DetA': float(np.mean(hota['DetA'])),
            'ID switches': int(clear['IDSW']), 'MOTA': float(clear['MOTA'])}


def frame_result(detections):
    """Return the `FrameResult` of a frame's `Detections`, masks at full size."""
    masks = np.zeros((len(detections), *detections.image_shape), bool)
    for index, mask in enumerate(masks):
        mask[:] = detections.mask(index)
    return FrameResult(detections.ids, detections.class_ids, detections.scores, masks)


class SceneRunner:
    """Infer scenes once with the package's predictor; then track them with any tracker."""

    def __init__(self, model, imgsz, conf, device='cpu'):
        from segtrack_ros.core.crop_predictor import CropPredictor

        self.model = load_model(str(model))
        self.options = {'conf': conf, 'imgsz': imgsz, 'device': device, 'verbose': False,
                        'predictor': CropPredictor, 'mode': 'track'}
        self.model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), **self.options)  # set-up

    def infer(self, frames, features, native_reid_config):
        """Return the results of `frames`, with the detector's features for ReID `auto` or not."""
        hooks = StreamTrackers(native_reid_config, self.model.predictor)
        if features:
            hooks.start()
        try:
            return [self.model.predict(frame, **self.options)[0] for frame in frames]
        finally:
            hooks.stop()

    def inference_ms(self, frames, native_reid_config):
        """
        Median ms per frame of inference without and with the features of ReID `auto`.

        Frame by frame, alternately, so that both see the same load on a shared machine.
        """
        hooks = StreamTrackers(native_reid_config, self.model.predictor)
        spent = {'plain': [], 'ReID auto': []}
        for frame in frames:
            for kind in spent:
                if kind == 'plain':
                    hooks.stop()
                else:
                    hooks.start()
                start = time.perf_counter()
                self.model.predict(frame, **self.options)
                spent[kind].append((time.perf_counter() - start) * 1000)
        hooks.stop()
        return {kind: float(np.median(ms)) for kind, ms in spent.items()}

    def track(self, config, results):
        """Track `results` (one stream) with tracker `config`; return frame results and ms."""
        trackers = StreamTrackers(config, self.model.predictor)
        frames, spent = [], []
        for result in results:
            start = time.perf_counter()
            (tracked,) = trackers.update([result], ['scene'])
            spent.append((time.perf_counter() - start) * 1000)
            frames.append(frame_result(detections_from_result(tracked, True)))
        return frames, float(np.mean(spent))


def same_as_ultralytics(config, frames, model, imgsz, conf):
    """Tell whether the `Segmenter` gives model.track's ids and boxes on `frames`."""
    from ultralytics import YOLO

    segmenter = Segmenter(SegmenterConfig(model=str(model), device='cpu', mode='track',
                                          tracker=config, conf=conf, imgsz=imgsz))
    direct = YOLO(str(model))
    for frame in frames:
        detections = segmenter.process(frame)
        result = direct.track(frame, persist=True, tracker=config, conf=conf, imgsz=imgsz,
                              device='cpu', verbose=False)[0]
        ids = (np.zeros(0, int) if result.boxes.id is None
               else result.boxes.id.numpy().astype(int))
        order, direct_order = np.argsort(detections.ids), np.argsort(ids)
        if not np.array_equal(detections.ids[order], ids[direct_order]) or not np.allclose(
                detections.boxes[order], result.boxes.xyxy.numpy()[direct_order], atol=1e-2):
            return False
    return True


def require_trackeval():
    """Exit with one line naming what to install when trackeval (a dev requirement) is missing."""
    try:
        import trackeval  # noqa: F401
    except ImportError:
        raise SystemExit('segtrack-eval --trackers needs trackeval: pip install trackeval '
                         '(or make venv, which installs requirements-dev.txt)') from None


def compare_trackers(trackers, model, imgsz=320, conf=0.25, check=True):
    """
    Run every tracker of `trackers` on every occlusion scene; return one row of figures each.

    Rows hold the combined identity figures of the occlusion scenes, each scene's IDF1, the
    tracker's ms per frame on them and on the crowd scene, and (with `check`) whether the
    segmenter equals model.track on the first scene's first frames. Also returns the median
    inference ms per frame on the crowd scene, plain and with the features of ReID `auto`.
    """
    require_trackeval()
    scenes = occlusion_scenes()
    runner = SceneRunner(model, imgsz, conf)
    rows = {name: {'sequences': {}, 'ms': {}} for name in trackers}
    with tempfile.TemporaryDirectory() as folder:
        configs = {name: check_tracker(tracker_file(name, folder)) for name in trackers}
        features = {name: StreamTrackers(config, runner.model.predictor).native_features
                    for name, config in configs.items()}  # whether it takes ReID `auto`
        reid_config = tracker_file(f'tracktrack.yaml{REID}', folder)
        for scene_name, scene in scenes.items():
            frames, truths = zip(*(render_frame(scene, t) for t in range(scene.config.frames)))
            inferred = {native: runner.infer(frames, native, reid_config)
                        for native in set(features.values())}
            for name in trackers:
                results, ms = runner.track(configs[name], inferred[features[name]])
                rows[name]['ms'][scene_name] = ms
                if scene_name != TIMING_SCENE:
                    rows[name]['sequences'][scene_name] = identity_metrics(truths, results)
            if scene_name == TIMING_SCENE:
                inference = runner.inference_ms(frames, reid_config)
            if check and scene_name == next(iter(scenes)):
                for name in trackers:
                    rows[name]['same'] = same_as_ultralytics(
                        configs[name], frames[:CHECK_FRAMES], model, imgsz, conf)
    table = []
    for name, row in rows.items():
        sequences = row['sequences']
        figures = {'tracker': name, **combine(list(sequences.values()))}
        figures.update({f'IDF1 {scene}': combine([metrics])['IDF1']
                        for scene, metrics in sequences.items()})
        occlusion_ms = [ms for scene, ms in row['ms'].items() if scene != TIMING_SCENE]
        figures['ms/frame'] = float(np.mean(occlusion_ms))
        figures[f'ms/frame {TIMING_SCENE}'] = row['ms'].get(TIMING_SCENE, float('nan'))
        if check:
            figures['= model.track'] = 'yes' if row['same'] else 'NO'
        table.append(figures)
    return table, inference


def markdown_table(rows):
    """Format rows of figures as a Markdown table."""
    names = list(rows[0])
    lines = ['| ' + ' | '.join(names) + ' |', '|' + '|'.join('---' for _ in names) + '|']
    for row in rows:
        cells = [f'{value:.3f}' if isinstance(value, float) else str(value)
                 for value in row.values()]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)

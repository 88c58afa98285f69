"""
`segtrack-eval`: how well the package segments and tracks, against exact ground truth.

It runs the package on a generated video (`segtrack_ros.eval.synthetic`) and, on the same frames, a
plain `model.track` loop of ultralytics, and prints one table for both: per-class mask AP50,
mean matched mask IoU, and the MOT metrics of `motmetrics` (MOTA, IDF1, ID switches,
fragmentations, mostly tracked) with a 1 - mask IoU distance. Same masks give the same numbers,
so the two columns show whether the package loses anything of what the model gives.
"""

import argparse
from pathlib import Path
import tempfile

import numpy as np

from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.core.tracking import check_tracker, DEFAULT_TRACKER
from segtrack_ros.eval.matching import FrameResult, MIN_AREA, MIN_IOU
from segtrack_ros.eval.synthetic import CLASS_NAMES, load_truth, SceneConfig, write_video
from segtrack_ros.io.video_io import open_source, read_frames


def iou_matrix(masks_a, masks_b):
    """Return the mask IoU of every pair, (len(a), len(b)), of two N×H×W bool stacks."""
    if len(masks_a) == 0 or len(masks_b) == 0:
        return np.zeros((len(masks_a), len(masks_b)))
    flat_a = masks_a.reshape(len(masks_a), -1).astype(np.float32)
    flat_b = masks_b.reshape(len(masks_b), -1).astype(np.float32)
    intersection = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def without_tiny_instances(truths, results, min_area=MIN_AREA):
    """
    Drop ground-truth instances of fewer than `min_area` visible pixels, as "don't care".

    A prediction that matches such an instance (IoU >= MIN_IOU) is dropped as well, so that it
    counts neither as found nor as a false positive.
    """
    kept_truths, kept_results = [], []
    for truth, result in zip(truths, results):
        tiny = truth.masks.reshape(len(truth.ids), -1).sum(1) < min_area
        ious = iou_matrix(result.masks, truth.masks[tiny])
        keep = ~(ious >= MIN_IOU).any(1) if tiny.any() else np.ones(len(result.ids), bool)
        kept_truths.append(FrameResult(truth.ids[~tiny], truth.class_ids[~tiny],
                                       np.ones((~tiny).sum()), truth.masks[~tiny]))
        kept_results.append(FrameResult(result.ids[keep], result.class_ids[keep],
                                        result.scores[keep], result.masks[keep]))
    return kept_truths, kept_results


def tracking_metrics(truths, results, min_iou=MIN_IOU):
    """
    Compute the MOT metrics of `results` against `truths` (one per frame) with motmetrics.

    A prediction can match a ground-truth instance when their mask IoU is at least `min_iou`;
    the distance is 1 - IoU. Returns MOTA, IDF1, ID switches, fragmentations, mostly tracked
    (fraction of ground-truth tracks) and the mean IoU of the matched pairs.
    """
    import motmetrics

    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for truth, result in zip(truths, results):
        distances = 1.0 - iou_matrix(truth.masks, result.masks)
        distances[distances > 1.0 - min_iou] = np.nan
        accumulator.update(truth.ids.tolist(), result.ids.tolist(), distances)
    names = ['mota', 'idf1', 'num_switches', 'num_fragmentations', 'mostly_tracked',
             'num_unique_objects']
    summary = motmetrics.metrics.create().compute(accumulator, metrics=names, name='run')
    figures = summary.to_dict('records')[0]
    events = accumulator.mot_events
    matched = events[events.Type == 'MATCH'].D
    return {'MOTA': figures['mota'], 'IDF1': figures['idf1'],
            'ID switches': int(figures['num_switches']),
            'fragmentations': int(figures['num_fragmentations']),
            'mostly tracked': figures['mostly_tracked'] / max(figures['num_unique_objects'], 1),
            'mean matched mask IoU': float(1.0 - matched.mean()) if len(matched) else 0.0}


def average_precision_50(truths, results, class_id):
    """
    Compute the mask AP at IoU 0.5 of one class over all frames (all-point interpolation).

    Written here because it is a few lines on masks we already hold; ultralytics' own mAP needs
    its dataset format and runs the model again.
    """
    scored, positives = [], 0
    for truth, result in zip(truths, results):
        truth_masks = truth.masks[truth.class_ids == class_id]
        positives += len(truth_masks)
        mine = result.class_ids == class_id
        scores = result.scores[mine]
        ious = iou_matrix(result.masks[mine], truth_masks)
        taken = np.zeros(len(truth_masks), bool)
        for index in np.argsort(-scores, kind='stable'):  # greedy, best score first
            free = np.where(taken, 0.0, ious[index])
            hit = free.size > 0 and free.max() >= MIN_IOU
            if hit:
                taken[free.argmax()] = True
            scored.append((scores[index], hit))
    if positives == 0:
        return float('nan')
    scored.sort(key=lambda item: -item[0])
    hits = np.array([hit for _, hit in scored], float)
    true_positives = np.cumsum(hits)
    recall = np.concatenate(([0.0], true_positives / positives))
    precision = np.concatenate(([1.0], true_positives / np.arange(1, len(hits) + 1)))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def evaluate(truths, results, class_names=CLASS_NAMES):
    """Compute the figures of one run: AP50 per class, then the tracking metrics."""
    truths, results = without_tiny_instances(truths, results)
    figures = {f'mask AP50 {name}': average_precision_50(truths, results, class_id)
               for class_id, name in enumerate(class_names)}
    figures.update(tracking_metrics(truths, results))
    return figures


def package_results(frames, config):
    """Run the package's Segmenter over `frames`; each instance's full-size `Detections.mask`."""
    segmenter = Segmenter(config)
    results = []
    for frame in frames:
        detections = segmenter.process(frame)
        masks = np.zeros((len(detections), *frame.shape[:2]), bool)
        for index, mask in enumerate(masks):
            mask[:] = detections.mask(index)
        results.append(FrameResult(detections.ids, detections.class_ids, detections.scores,
                                   masks))
    return results


def direct_results(frames, config):
    """Run a plain ultralytics `model.track` loop over `frames`, as the guide does."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import ops

    model = YOLO(config.model)
    tracker = check_tracker(config.tracker)  # a path: ultralytics knows no bundled name
    threads = torch.get_num_threads()
    results = []
    for frame in frames:
        result = model.track(frame, persist=True, tracker=tracker, conf=config.conf,
                             iou=config.iou, imgsz=config.imgsz, device=config.device,
                             verbose=False)[0]
        torch.set_num_threads(threads)  # the same threads as the package, for a fair run
        boxes = result.boxes
        if result.masks is None or boxes.id is None:
            empty = np.zeros(0, np.int64)
            results.append(FrameResult(empty, empty, np.zeros(0), np.zeros((0, *frame.shape[:2]),
                                                                           bool)))
            continue
        masks = ops.scale_masks(result.masks.data[None], result.orig_shape)[0] > 0.5
        results.append(FrameResult(boxes.id.int().numpy(), boxes.cls.int().numpy(),
                                   boxes.conf.numpy(), masks.numpy()))
    return results


def read_video(path):
    """Read all frames of a video file."""
    capture, _ = open_source(path)
    try:
        return list(read_frames(capture))
    finally:
        capture.release()


def format_table(columns):
    """Format a text table: one row per figure, one column per run."""
    names = list(columns)
    rows = [f"{'metric':24s}" + ''.join(f'{name:>22s}' for name in names)]
    for figure in next(iter(columns.values())):
        cells = []
        for name in names:
            value = columns[name][figure]
            cells.append(f'{value:>22d}' if isinstance(value, int) else f'{value:>22.3f}')
        rows.append(f'{figure:24s}' + ''.join(cells))
    return '\n'.join(rows)


def build_parser():
    """Build the command line of `segtrack-eval`."""
    parser = argparse.ArgumentParser(
        prog='segtrack-eval',
        description='Score the package and a direct ultralytics loop on a generated video.')
    parser.add_argument('--model', default=str(BUNDLED_MODEL))
    parser.add_argument('--seed', type=int, default=123, help='seed of the generated video')
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--imgsz', type=int, default=320,
                        help='inference size; the bundled model was trained at 320')
    parser.add_argument('--tracker', default=DEFAULT_TRACKER)
    parser.add_argument(
        '--trackers', nargs='+', metavar='T',
        help='instead, compare trackers on the occlusion scenes (IDF1, HOTA, ID switches, ms '
             "per frame): tracker configs, x.yaml+reid for x with ReID 'auto', or all")
    return parser


def run(args):
    """Generate the video, run both, print the table; return the figures by column."""
    if args.trackers:
        return run_trackers(args)
    config = SegmenterConfig(model=args.model, device=args.device, mode='track',
                             tracker=args.tracker, imgsz=args.imgsz)
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / f'eval-seed{args.seed}.avi'
        write_video(video, SceneConfig(frames=args.frames, seed=args.seed))
        truths = load_truth(video.with_suffix('.npz'))
        frames = read_video(video)
    columns = {'segtrack_ros': evaluate(truths, package_results(frames, config)),
               'direct ultralytics': evaluate(truths, direct_results(frames, config))}
    print(f'segtrack-eval: {Path(args.model).name} on a generated video (seed {args.seed}, '
          f'{len(frames)} frames, 768x576), imgsz {args.imgsz}, {args.tracker}')
    print(format_table(columns))
    return columns


def run_trackers(args):
    """Compare trackers on the occlusion scenes (`eval.identity`); print and return the rows."""
    from segtrack_ros.eval.identity import ALL_TRACKERS, compare_trackers, markdown_table

    trackers = ALL_TRACKERS if args.trackers == ['all'] else args.trackers
    rows, inference = compare_trackers(trackers, args.model, imgsz=args.imgsz)
    print(f'segtrack-eval: {Path(args.model).name}, imgsz {args.imgsz}, occlusion scenes '
          f'(eval.occlusion); inference ms per frame (median): '
          + ', '.join(f'{name} {ms:.1f}' for name, ms in inference.items()))
    print(markdown_table(rows))
    return rows


def main(argv=None):
    """Entry point of `segtrack-eval`."""
    apply_process_defaults()
    run(build_parser().parse_args(argv))


if __name__ == '__main__':
    main()

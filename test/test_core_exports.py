"""
Tests of exported models (segtrack_ros.core.exports and the segmenter's loading of exports).

Fidelity: the bundled model, run as its `.pt` and as the ONNX and OpenVINO exports the segmenter
makes itself, finds the same instances on generated scenes (count, classes, boxes within 1 px,
mask IoU >= 0.98) and, tracking, the same ids. The cache: a changed key makes a new export, an
export killed half-way is never loaded, two processes starting at once export once. Models that
are not segmentation models, and exports that cannot be made, are refused with one line.
"""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from segtrack_ros.core.exports import export_path, exported_model, ExportSpec, RUNTIMES
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.eval.synthetic import generate_scene, SceneConfig

pytest.importorskip('onnxruntime', reason='pip install -r requirements-dev.txt')
pytest.importorskip('openvino', reason='pip install -r requirements-dev.txt')

IMGSZ = 320  # the bundled model's training size
MIN_IOU = 0.98
BOX_TOLERANCE = 1.0  # pixels
SCENE = SceneConfig(frames=16, objects=8, seed=5)
SMALL = 64  # imgsz of the exports that test the cache only: fast to make


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """Return the export folder shared by the module's segmenters."""
    return tmp_path_factory.mktemp('exports')


@pytest.fixture(scope='module')
def scene():
    """Return the frames of a generated scene."""
    return [frame for frame, _ in generate_scene(SCENE)]


def make_segmenter(export_format, cache, mode='predict', log=None, **settings):
    """Make a CPU segmenter of the bundled model, run as it is or as an export of it."""
    settings = {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'mode': mode, 'imgsz': IMGSZ,
                'export_format': export_format, 'export_dir': str(cache), **settings}
    return Segmenter(SegmenterConfig(**settings), log=log)


@pytest.fixture(scope='module')
def static_onnx(tmp_path_factory):
    """Return an ONNX export of the bundled model fixed at imgsz 320 and batch 2 (not dynamic)."""
    from ultralytics import YOLO

    source = tmp_path_factory.mktemp('static') / 'static.pt'
    source.write_bytes(BUNDLED_MODEL.read_bytes())
    return YOLO(str(source)).export(format='onnx', imgsz=IMGSZ, batch=2, dynamic=False,
                                    verbose=False)


def mask_iou(first, second):
    """Return the IoU of two bool masks."""
    union = np.logical_or(first, second).sum()
    return np.logical_and(first, second).sum() / union if union else 1.0


def matching(reference, other):
    """Return pairs (instance of `reference`, index of the same-class nearest box in `other`)."""
    pairs = []
    for index, box in enumerate(reference.boxes):
        same_class = np.flatnonzero(other.class_ids == reference.class_ids[index])
        assert same_class.size, f'class {reference.class_ids[index]} missing'
        distance = np.abs(other.boxes[same_class] - box).max(axis=1)
        pairs.append((index, int(same_class[np.argmin(distance)])))
    return pairs


def assert_same_instances(reference, other, label):
    """Assert the same count and classes, boxes within 1 px, mask IoU >= 0.98 per instance."""
    assert len(other) == len(reference), label
    assert sorted(other.class_ids) == sorted(reference.class_ids), label
    for index, match in matching(reference, other):
        assert np.abs(other.boxes[match] - reference.boxes[index]).max() <= BOX_TOLERANCE, label
        assert mask_iou(reference.mask(index), other.mask(match)) >= MIN_IOU, label


@pytest.mark.parametrize('export_format', ['onnx', 'openvino'])
def test_exports_find_the_same_instances_as_the_pt(export_format, cache, scene):
    """Every frame of a scene: the export's instances are the .pt's."""
    reference = make_segmenter('', cache)
    exported = make_segmenter(export_format, cache)
    found = 0
    for number, frame in enumerate(scene):
        expected = reference.process(frame)
        assert_same_instances(expected, exported.process(frame), f'frame {number}')
        found += len(expected)
    assert found >= 2 * len(scene)  # the scene is not empty: the comparison means something


@pytest.mark.parametrize('export_format', ['onnx', 'openvino'])
def test_exports_give_the_same_track_ids_over_a_scene(export_format, cache, scene):
    """Tracking: the same ids, with their boxes within 1 px, frame by frame."""
    reference = make_segmenter('', cache, mode='track')
    exported = make_segmenter(export_format, cache, mode='track')
    ids = set()
    for number, frame in enumerate(scene):
        expected, got = reference.process(frame), exported.process(frame)
        assert sorted(got.ids) == sorted(expected.ids), f'frame {number}'
        for track_id, box in zip(expected.ids, expected.boxes):
            other = got.boxes[list(got.ids).index(track_id)]
            assert np.abs(other - box).max() <= BOX_TOLERANCE, f'frame {number}'
        ids.update(expected.ids)
    assert len(ids) >= 3


@pytest.mark.parametrize('export_format', ['onnx', 'openvino'])
def test_an_export_leaves_the_cores_to_its_runtime(export_format, cache, scene):
    """Torch, left only the pre- and post-processing, keeps one thread; the .pt keeps them all."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as a program starts on two cores; other tests' predicts lower it
    try:
        assert make_segmenter('', cache).torch_threads == 2
        exported = make_segmenter(export_format, cache)
    finally:
        torch.set_num_threads(before)
    assert exported.torch_threads == 1 and not exported.leaves_cpu_free
    assert exported._on_torch_thread(torch.get_num_threads) == 1  # what torch runs with
    exported.process(scene[0])  # ultralytics sets torch's threads again on its first predict
    assert exported._on_torch_thread(torch.get_num_threads) == 1


def test_a_second_start_reuses_the_export(cache):
    """The same settings find the export in the cache, and so do another imgsz and batch."""
    make_segmenter('onnx', cache)
    for settings in ({}, {'imgsz': IMGSZ + 32}, {'batch': 3}):  # a dynamic export takes them
        lines = []
        make_segmenter('onnx', cache, log=lines.append, **settings)
        assert any('found in the cache' in line for line in lines), (settings, lines)
        assert not any(line.startswith('exporting') for line in lines), (settings, lines)


def test_every_setting_of_the_key_makes_its_own_export(tmp_path, monkeypatch):
    """
    Format and content give another file; imgsz and batch only for an engine (not dynamic).

    The same spec, or another imgsz or batch of a dynamic format, gives the same file.
    """
    base = ExportSpec('torchscript', imgsz=SMALL)
    first = exported_model(BUNDLED_MODEL, base, tmp_path)
    for same in (base, ExportSpec('torchscript', SMALL + 32), ExportSpec('torchscript', batch=2)):
        assert exported_model(BUNDLED_MODEL, same, tmp_path) == first, same
    other = exported_model(BUNDLED_MODEL, ExportSpec('onnx', imgsz=SMALL), tmp_path)
    assert other != first and other.exists()
    monkeypatch.setitem(RUNTIMES, 'engine', ())  # its key only: no TensorRT on this machine
    engines = {export_path(BUNDLED_MODEL, ExportSpec('engine', *settings), tmp_path)
               for settings in ((SMALL, False, 1), (SMALL + 32, False, 1), (SMALL, False, 2))}
    assert len(engines) == 3
    changed = tmp_path / 'changed' / 'shapes-seg.pt'  # other content, same name
    changed.parent.mkdir()
    changed.write_bytes(BUNDLED_MODEL.read_bytes() + b'\0')
    assert exported_model(changed, base, tmp_path).name != first.name


EXPORTER = """
import sys, time
from pathlib import Path
from segtrack_ros.core.exports import ExportSpec, exported_model
from segtrack_ros.core.segmenter import BUNDLED_MODEL
cache, go = Path(sys.argv[1]), Path(sys.argv[2])
(cache.parent / f'ready-{sys.argv[3]}').touch()
while not go.exists():
    time.sleep(0.01)
print(exported_model(BUNDLED_MODEL, ExportSpec('onnx', imgsz=%d), cache, log=print), flush=True)
""" % SMALL


def start_exporter(tmp_path, name):
    """Start a process that exports the bundled model to ONNX once `tmp_path/go` exists."""
    return subprocess.Popen(
        [sys.executable, '-c', EXPORTER, str(tmp_path / 'cache'), str(tmp_path / 'go'), name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout, what):
    """Poll `condition` until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def test_two_processes_starting_at_once_export_once(tmp_path):
    """One exports; the other waits for the lock and takes its export."""
    processes = [start_exporter(tmp_path, name) for name in ('a', 'b')]
    wait_for(lambda: all((tmp_path / f'ready-{name}').exists() for name in 'ab'), 120,
             'both processes to start')
    (tmp_path / 'go').touch()
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    text = ''.join(outputs)
    assert text.count('exporting ') == 1, text
    assert text.count('made by another process') == 1, text
    paths = {output.strip().splitlines()[-1] for output in outputs}
    assert len(paths) == 1 and Path(paths.pop()).exists()


def test_an_interrupted_export_is_never_loaded(tmp_path):
    """A process killed while exporting leaves no export; the next start makes a whole one."""
    process = start_exporter(tmp_path, 'a')
    (tmp_path / 'go').touch()
    cache = tmp_path / 'cache'
    wait_for(lambda: process.poll() is not None or any(cache.glob('.partial-*/*.pt')), 120,
             'the export to start')
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not any(cache.glob('*.onnx')), 'a killed export was published'
    assert any(cache.glob('.partial-*')), 'the process was not killed half-way'
    lines = []
    path = exported_model(BUNDLED_MODEL, ExportSpec('onnx', imgsz=SMALL), cache, lines.append)
    assert any(line.startswith('exporting') for line in lines), lines
    assert not any(cache.glob('.partial-*')), 'the stale partial export was left'
    segmenter = Segmenter(SegmenterConfig(model=str(path), device='cpu', mode='predict',
                                          imgsz=SMALL))
    assert segmenter.class_names[0] == 'disc'


def static_segmenter(static_onnx, imgsz=IMGSZ, **settings):
    """Make a CPU segmenter of the static export; return it and the lines it logged."""
    lines = []
    segmenter = Segmenter(SegmenterConfig(model=static_onnx, device='cpu', mode='predict',
                                          imgsz=imgsz, **settings), log=lines.append)
    return segmenter, lines


def test_an_export_fixed_at_another_size_is_run_at_its_size(static_onnx, scene):
    """A 320 export given imgsz 640 runs at 320, says so in one line, keeps it on update."""
    segmenter, lines = static_segmenter(static_onnx, imgsz=640)
    assert segmenter.fixed_imgsz == (IMGSZ, IMGSZ) and segmenter.config.imgsz == IMGSZ
    assert sum('fixed at export' in line and 'imgsz 640' in line for line in lines) == 1, lines
    segmenter.update(imgsz=640, conf=0.3)
    assert segmenter.config.imgsz == IMGSZ and segmenter.config.conf == 0.3
    at_its_size, lines = static_segmenter(static_onnx, conf=0.3)
    assert not any('imgsz' in line for line in lines), lines
    assert_same_instances(at_its_size.process(scene[0]), segmenter.process(scene[0]),
                          'adopted size')


def test_a_fixed_batch_smaller_than_the_cameras_runs_in_parts(static_onnx, scene):
    """
    A batch-2 static export takes batches of 3 cameras (split) and of 1 (padded).

    Each frame's instances are those of the frame inferred alone. (A static export letterboxes
    to a square, so its boxes differ from the .pt's by a pixel or two: the exports the node
    makes itself are dynamic.)
    """
    segmenter, lines = static_segmenter(static_onnx, batch=3)
    assert any('batches of exactly 2' in line for line in lines), lines
    alone, _ = static_segmenter(static_onnx)
    streams = ['front', 'rear', 'left']
    frames = scene[:3]
    for frame, result in zip(frames, segmenter.process_batch(frames, streams)):
        assert_same_instances(alone.process(frame), result, 'batch of 3')
    segmenter.update(mode='track')
    for frames in (scene[3:6], scene[6:9]):
        results = segmenter.process_batch(frames, streams)
        assert all(result.tracked and len(result) for result in results)


@pytest.fixture(scope='module')
def detect_weights(tmp_path_factory):
    """Return an untrained detect .pt and its ONNX export with and without its metadata."""
    import onnx
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp('detect')
    weights = folder / 'detector.pt'
    YOLO('yolov8n.yaml').save(str(weights))
    exported = Path(YOLO(str(weights)).export(format='onnx', imgsz=SMALL, verbose=False))
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    bare = folder / 'bare.onnx'
    onnx.save(model, str(bare))
    return weights, exported, bare


@pytest.mark.parametrize('which, expected', [
    (0, 'is a detect model, not a segmentation one'),
    (1, 'is a detect model (says its export metadata)'),
    (2, 'has 1 output(s) and no mask prototypes'),
])
def test_a_model_that_is_not_a_segmentation_one_is_refused_in_one_line(
        detect_weights, which, expected):
    """A detect .pt, a detect export and one without metadata: one line naming what it is."""
    with pytest.raises(SegmenterError) as raised:
        Segmenter(SegmenterConfig(model=str(detect_weights[which]), device='cpu',
                                  mode='predict', imgsz=SMALL))
    assert expected in str(raised.value) and '\n' not in str(raised.value)


@pytest.mark.parametrize('settings, expected', [
    ({'export_format': 'engine'}, 'needs a CUDA GPU'),
    ({'export_format': 'torchscript', 'half': True}, 'set half false on a CPU'),
    ({'export_format': 'onnx', 'model': 'yolov8n-seg.yaml'}, 'is not one: give the .pt'),
    ({'export_format': 'onnx', 'export_dir': '/dev/null/exports'}, 'cannot be used'),
])
def test_an_export_that_cannot_be_made_is_refused_with_the_reason(settings, expected):
    """Refused before trying (engine without CUDA, ...) or failing with the reason."""
    config = {'model': str(BUNDLED_MODEL), 'device': 'cpu', 'mode': 'predict', 'imgsz': SMALL,
              **settings}
    with pytest.raises(SegmenterError) as raised:
        Segmenter(SegmenterConfig(**config))
    assert expected in str(raised.value) and '\n' not in str(raised.value)


def test_the_default_cache_is_under_ros_home_when_set(monkeypatch, tmp_path):
    """$ROS_HOME/segtrack_ros/exports, else the user's cache folder."""
    from segtrack_ros.core.exports import default_cache_dir

    monkeypatch.setenv('ROS_HOME', str(tmp_path))
    assert default_cache_dir() == tmp_path / 'segtrack_ros' / 'exports'
    monkeypatch.delenv('ROS_HOME')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    assert default_cache_dir() == tmp_path / 'cache' / 'segtrack_ros' / 'exports'
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert default_cache_dir() == Path(os.path.expanduser('~/.cache/segtrack_ros/exports'))

"""
Tests of the `segtrack-video` command: in-process through `main`, and as a real subprocess.

An untrained model with a very low confidence threshold finds (random) instances in every frame,
so the runs do the full work of a real model without needing its weights. It is saved once, from
an initialisation that does find instances (about one in seven finds none). The trackers' tests
use the bundled shapes model on a generated scene, whose tracks the core's equal.
"""

import os
from pathlib import Path
import re
import subprocess
import sys

from conftest import UNTRAINED_CONF
import cv2
import numpy as np
import pytest
from segtrack_ros.cli.common import render_config
from segtrack_ros.cli.video import build_parser, main, run
from segtrack_ros.core.render import Renderer
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import SceneConfig, write_video
from segtrack_ros.io.video_io import open_writer, read_frames
import torch
from ultralytics import YOLO
from ultralytics.utils import YAML
from ultralytics.utils.checks import check_yaml

SCRIPT = Path(sys.executable).parent / 'segtrack-video'
IMGSZ = 320
ERROR = 'segtrack-video: error:'


@pytest.fixture(scope='module')
def model(untrained_weights):
    """Return the path of the untrained model shared by the tests."""
    return untrained_weights


@pytest.fixture(scope='module')
def base(model):
    """Return the flags of every run: the untrained model, its confidence, CPU, small size."""
    return ['--model', model, '--conf', str(UNTRAINED_CONF), '--device', 'cpu',
            '--imgsz', str(IMGSZ), '--no-show']


def read_video(path):
    """Read the frames, width, height and fps of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f'{path} cannot be read back'
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = list(read_frames(capture))
    capture.release()
    return frames, width, height, fps


def assert_annotated_copy(output, source, frame_count):
    """Assert that `output` has the size and fps of `source`, `frame_count` frames, drawings."""
    frames, width, height, fps = read_video(output)
    source_frames, source_width, source_height, source_fps = read_video(source)
    assert (width, height) == (source_width, source_height)
    assert fps == pytest.approx(source_fps)
    assert len(frames) == frame_count
    difference = np.abs(frames[0].astype(int) - source_frames[0].astype(int)).mean()
    assert difference > 5, 'the output frames should be annotated'


def assert_summary(stdout, frames, output, tracks=False):
    """Assert that the summary line tells the frame count, the fps, and the output file."""
    lines = [line for line in stdout.splitlines() if line.startswith('segtrack-video:')]
    assert len(lines) == 1, stdout
    summary = lines[0]
    assert f'{frames} frames' in summary and 'fps' in summary
    assert str(output) in summary
    assert re.search(r'[1-9]\d* instances', summary), summary
    assert bool(re.search(r'[1-9]\d* tracks', summary)) == tracks, summary


def test_predict_with_class_colors(base, test_video, tmp_path, capsys):
    output = tmp_path / 'predict.avi'
    main([str(test_video), *base, '--mode', 'predict', '--color-by', 'class',
          '--output', str(output)])
    assert_annotated_copy(output, test_video, 12)
    assert_summary(capsys.readouterr().out, 12, output)


def test_track_with_track_colors_to_mp4(base, test_video, permissive_tracker, tmp_path, capsys):
    output = tmp_path / 'track.mp4'
    main([str(test_video), *base, '--mode', 'track', '--color-by', 'track',
          '--tracker', permissive_tracker, '--trail-length', '5', '--output', str(output)])
    assert_annotated_copy(output, test_video, 12)
    assert_summary(capsys.readouterr().out, 12, output, tracks=True)


def test_default_output_name_and_max_frames(base, test_video, permissive_tracker, tmp_path,
                                            capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([str(test_video), *base, '--tracker', permissive_tracker, '--max-frames', '5'])
    output = tmp_path / 'moving-track.avi'  # track mode is the default
    assert [path.name for path in tmp_path.iterdir()] == [output.name]
    assert_annotated_copy(output, test_video, 5)
    assert_summary(capsys.readouterr().out, 5, output.name, tracks=True)


def test_subprocess_run(base, test_video, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != 'DISPLAY'}
    process = subprocess.run(
        [str(SCRIPT), str(test_video), *base[:-1], '--mode', 'predict', '--max-frames', '5'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert 'Traceback' not in process.stderr
    output = tmp_path / 'moving-predict.avi'
    assert_annotated_copy(output, test_video, 5)
    assert_summary(process.stdout, 5, output.name)


def assert_one_error_line(stderr, *words):
    """Assert that `stderr` is exactly one error line, naming each of `words`."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ERROR), stderr
    assert 'Traceback' not in stderr
    for word in words:
        assert word in lines[0]


def fail(argv, capfd):
    """Run `main(argv)` that must fail; return its exit code and its stderr (all of fd 2)."""
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capfd.readouterr()
    assert exit_info.value.code not in (0, None)
    assert ERROR not in captured.out
    return exit_info.value.code, captured.err


def test_missing_input(base, tmp_path, capfd):
    missing = tmp_path / 'nothing.avi'
    _, stderr = fail([str(missing), *base, '--output', str(tmp_path / 'out.avi')], capfd)
    assert_one_error_line(stderr, 'nothing.avi', 'not found')
    assert not (tmp_path / 'out.avi').exists()


def test_missing_model(base, test_video, tmp_path, capfd):
    _, stderr = fail([str(test_video), *base, '--model', 'missing/model.pt',
                      '--output', str(tmp_path / 'out.avi')], capfd)
    assert_one_error_line(stderr, 'missing/model.pt', 'not found')


def test_corrupt_model(base, test_video, tmp_path, capfd):
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'PK\x03\x04 not a checkpoint')
    _, stderr = fail([str(test_video), *base, '--model', str(corrupt),
                      '--output', str(tmp_path / 'out.avi')], capfd)
    assert_one_error_line(stderr, 'corrupt.pt')


def test_corrupt_model_subprocess(base, test_video, tmp_path):
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'\x80\x02 not a checkpoint')
    process = subprocess.run(
        [str(SCRIPT), str(test_video), *base, '--model', str(corrupt)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert process.returncode != 0
    assert_one_error_line(process.stderr, 'corrupt.pt')


@pytest.mark.parametrize('where', ['missing folder', 'folder is a file', 'output is a folder'])
def test_unwritable_output(where, base, test_video, tmp_path, capfd):
    if where == 'missing folder':
        output = tmp_path / 'no' / 'such' / 'out.avi'
    elif where == 'folder is a file':
        # Tests run as root, which writes to read-only folders: a file cannot hold files at all.
        (tmp_path / 'plain-file').write_text('not a folder')
        output = tmp_path / 'plain-file' / 'out.avi'
    else:
        output = tmp_path / 'taken.avi'
        output.mkdir()
    _, stderr = fail([str(test_video), *base, '--mode', 'predict', '--output', str(output)],
                     capfd)
    assert_one_error_line(stderr, str(output))


@pytest.mark.parametrize('flags, words', [
    (['--mode', 'predict', '--color-by', 'track'], ['--color-by track', '--mode track']),
    (['--conf', '2'], ['--conf']),
    (['--imgsz', '0'], ['--imgsz']),
    (['--max-frames', 'five'], ['--max-frames']),
    (['--mode', 'banana'], ['--mode']),
    (['--no-such-flag'], ['--no-such-flag']),
])
def test_bad_flags(flags, words, base, test_video, tmp_path, capfd):
    output = tmp_path / 'out.avi'
    _, stderr = fail([str(test_video), *base, *flags, '--output', str(output)], capfd)
    assert_one_error_line(stderr, *words)
    assert not output.exists()


def test_missing_source_argument(capfd):
    code, stderr = fail([], capfd)
    assert code == 2
    assert_one_error_line(stderr, 'source')


def test_tracker_with_a_yaml_error_is_one_line(base, test_video, tmp_path, capfd):
    """A tracker file that is no YAML: one error line naming it, no traceback, no video left."""
    tracker = tmp_path / 'broken_tracker.yaml'
    tracker.write_text('tracker_type: bytetrack\ntrack_high_thresh: [0.5\nmatch_thresh: 0.8\n')
    output = tmp_path / 'out.avi'
    code, stderr = fail([str(test_video), *base, '--mode', 'track', '--tracker', str(tracker),
                         '--output', str(output)], capfd)
    assert code == 1
    assert_one_error_line(stderr, 'broken_tracker.yaml', 'not valid YAML')
    assert not output.exists()


SCENE_FRAMES = 8  # TrackTrack confirms a track on its third frame


@pytest.fixture(scope='module')
def scene_video(tmp_path_factory):
    """Return a generated scene of moving shapes as an MJPG video, for the bundled model."""
    path = tmp_path_factory.mktemp('scene') / 'scene.avi'
    write_video(path, SceneConfig(width=384, height=288, frames=SCENE_FRAMES, objects=6, seed=3))
    return path


@pytest.fixture(scope='module')
def reid_trackers(tmp_path_factory):
    """
    Return two TrackTrack configs with a local ReID model file: ReID on, and the same with it off.

    The model is an untrained classifier. Appearance alone decides the matches (iou_weight 0,
    a tight match_thresh): the classifier keeps the ids on this scene, motion alone does not,
    so a run that lost the ReID model shows.
    """
    folder = tmp_path_factory.mktemp('reid')
    torch.manual_seed(0)
    YOLO('yolov8n-cls.yaml').save(str(folder / 'untrained-cls.pt'))
    settings = {**YAML.load(check_yaml('tracktrack.yaml')),
                'model': str(folder / 'untrained-cls.pt'), 'iou_weight': 0.0, 'reid_weight': 1.0,
                'match_thresh': 0.3}
    paths = []
    for reid in (True, False):
        paths.append(str(folder / f'tracktrack-reid-{str(reid).lower()}.yaml'))
        YAML.save(paths[-1], {**settings, 'with_reid': reid})
    return paths


def core_annotated(tracker, frames, render, output):
    """
    Track `frames` with the core and `tracker`, draw them with `render`, write them to `output`.

    Return the track ids of each frame and the frames read back: the CLI's frames equal to
    these mean equal ids, as a track drawing's labels and colours are the ids.
    """
    chosen = {'tracker': tracker} if tracker else {}  # none: the core's default
    segmenter = Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', mode='track',
                                          imgsz=IMGSZ, **chosen))
    renderer = Renderer(render)
    writer = open_writer(output, 15.0, frames[0].shape[1], frames[0].shape[0])
    ids = []
    for frame in frames:
        detections = segmenter.process(frame)
        ids.append(detections.ids.tolist())
        writer.write(renderer.draw(frame, detections))
    writer.release()
    segmenter.release()
    return ids, read_video(output)[0]


@pytest.mark.parametrize('tracker', ['default', 'tracktrack.yaml', 'reid file'])
def test_each_tracker_gives_the_cores_ids(scene_video, reid_trackers, tmp_path, tracker):
    """The bundled model on a generated scene: the CLI's tracks are the core's, frame by frame."""
    tracker = {'default': None, 'reid file': reid_trackers[0]}.get(tracker, tracker)
    output = tmp_path / 'cli.avi'
    args = build_parser().parse_args(
        [str(scene_video), '--model', str(BUNDLED_MODEL), '--device', 'cpu', '--imgsz',
         str(IMGSZ), '--no-show', '--output', str(output),
         *(['--tracker', tracker] if tracker else [])])
    summary, _ = run(args, progress=False)
    frames = read_video(scene_video)[0]
    ids, expected = core_annotated(tracker, frames, render_config(args), tmp_path / 'core.avi')
    assert summary.frames == len(frames) == SCENE_FRAMES
    assert summary.instances == sum(map(len, ids))
    assert summary.track_ids == {('default', i) for frame_ids in ids for i in frame_ids}
    assert summary.tracks > 2, 'the scene should have tracks'
    for index, (got, want) in enumerate(zip(read_video(output)[0], expected)):
        same = np.array_equal(got, want)
        assert same, f'frame {index}: ids {ids[index]} expected'
    if tracker == reid_trackers[0]:  # the ReID model made these ids: without it they differ
        assert core_annotated(reid_trackers[1], frames, render_config(args),
                              tmp_path / 'no-reid.avi')[0] != ids

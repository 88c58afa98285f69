"""
`--export-format` on `segtrack-video` and `segtrack-bag`: the export is made once and reused.

The flags come from the parameter table (`cli.common`); what the export did goes to stderr, and an
export that cannot be made is one error line.
"""

from segtrack_ros.cli import video
from segtrack_ros.core.segmenter import BUNDLED_MODEL
from test_cli_bag import FRONT, input_messages, read_bag, REAR, run_cli, write_bag

FLAGS = ['--model', str(BUNDLED_MODEL), '--device', 'cpu', '--imgsz', '160', '--mode', 'predict']


def run_video(argv, capsys):
    """Run `segtrack-video` in this process; return its exit code and stderr."""
    try:
        video.main([str(arg) for arg in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_segtrack_video_exports_once_then_reuses(test_video, tmp_path, capsys):
    """First run: exported; second run: found in the cache; both write the video."""
    argv = [test_video, *FLAGS, '--no-show', '--max-frames', '3', '--export-format', 'onnx',
            '--export-dir', tmp_path / 'exports', '--output', tmp_path / 'out.avi']
    for said in ('exporting ', 'found in the cache'):
        code, stderr = run_video(argv, capsys)
        assert code == 0 and said in stderr, stderr
        assert (tmp_path / 'out.avi').exists()
    assert len(list((tmp_path / 'exports').glob('*.onnx'))) == 1


def test_segtrack_video_refuses_an_engine_without_cuda_in_one_line(test_video, tmp_path, capsys):
    """An engine on a machine without CUDA: one error line naming the fix, nothing written."""
    code, stderr = run_video([test_video, *FLAGS, '--no-show', '--export-format', 'engine',
                              '--export-dir', tmp_path, '--output', tmp_path / 'out.avi'],
                             capsys)
    lines = stderr.strip().splitlines()
    assert code != 0 and len(lines) == 1 and 'needs a CUDA GPU' in lines[0], stderr
    assert not (tmp_path / 'out.avi').exists()


def test_segtrack_bag_runs_an_export_on_two_topics(tmp_path):
    """Two cameras of a bag through an OpenVINO export: every frame processed."""
    bag = write_bag(tmp_path / 'drive', 'mcap', input_messages(3))
    code, stdout, stderr = run_cli([bag, tmp_path / 'out', '--topic', FRONT, '--topic', REAR,
                                    *FLAGS, '--export-format', 'openvino',
                                    '--export-dir', tmp_path / 'exports'])
    assert code == 0 and 'exporting ' in stderr, stderr
    _, messages = read_bag(tmp_path / 'out')
    detections = [topic for topic in messages if topic.endswith('/detections')]
    assert len(detections) == 2 and all(len(messages[topic]) == 3 for topic in detections)

"""
Tests of what the two programs share: flags made from the parameter table, their checks.

Both parsers are checked: a parameter given a flag in `params.PARAMETERS` is a flag of
`segtrack-video` and of `segtrack-bag`, and its value reaches the segmenter or the renderer.
"""

from dataclasses import replace
import subprocess
import sys

import pytest
from segtrack_ros.cli import bag, common, video
from segtrack_ros.core.render import RenderConfig
from segtrack_ros.core.segmenter import SegmenterConfig
from segtrack_ros.params import BY_NAME, PARAMETERS

PROGRAMS = {'segtrack-video': (video.build_parser, ['clip.avi']),
            'segtrack-bag': (bag.build_parser, ['in', 'out', '--topic', '/front/image_raw'])}
# The segmenter flags API.md names for both programs.
API_FLAGS = ('--model', '--mode', '--color-by', '--device', '--imgsz', '--conf', '--iou',
             '--max-det', '--classes', '--tracker', '--max-frames')


def parse(program, *flags):
    """Parse `flags` (after the program's required arguments) with `program`'s parser."""
    build, required = PROGRAMS[program]
    return build().parse_args([*required, *flags])


@pytest.mark.parametrize('program', PROGRAMS)
def test_flags_are_the_tables(program):
    parser = PROGRAMS[program][0]()
    options = {option: action for action in parser._actions for option in action.option_strings}
    assert set(API_FLAGS) <= set(options)
    flagged = [spec for spec in PARAMETERS if spec.flag]
    assert {spec.flag for spec in flagged} >= set(API_FLAGS) - {'--max-frames'}
    for spec in flagged:
        action = options[spec.flag]
        assert action.dest == spec.name
        assert action.default == (None if spec.name == 'color_mode' else spec.default)
        assert tuple(action.choices or ()) == spec.choices
        assert action.help.startswith(spec.description)


@pytest.mark.parametrize('program', PROGRAMS)
def test_values_reach_the_segmenter_and_the_renderer(program):
    args = parse(program, '--mode', 'predict', '--conf', '0.5', '--max-det', '7', '--classes',
                 '1', '3', '--mask-alpha', '0', '--trail-length', '4', '--imgsz', '320')
    common.check_args(args)
    assert common.segmenter_config(args) == SegmenterConfig(
        mode='predict', conf=0.5, max_det=7, classes=(1, 3), imgsz=320)
    assert common.render_config(args) == RenderConfig(color_by='class', mask_alpha=0.0,
                                                      trail_length=4)
    assert common.render_config(parse(program)).color_by == 'track'  # track mode's default


@pytest.mark.parametrize('program', PROGRAMS)
def test_a_parameter_given_a_flag_needs_no_other_code(program, monkeypatch):
    """`retina_masks` has no flag in the table; given one, both programs take it along."""
    retina = replace(BY_NAME['retina_masks'], flag='--retina-masks')
    monkeypatch.setattr(common, 'FLAGGED', (*common.FLAGGED, retina))
    assert common.segmenter_config(parse(program, '--retina-masks')).retina_masks is True
    assert common.segmenter_config(parse(program)).retina_masks is False


@pytest.mark.parametrize('flags, message', [
    (['--conf', '1.5'], '--conf: conf must be within [0.0, 1.0], got 1.5'),
    (['--imgsz', '100'], '--imgsz: imgsz must be a multiple of 32, got 100'),
    (['--max-det', '0'], '--max-det: max_det must be within [1, 1000], got 0'),
    (['--classes', '2', '-1'], '--classes: classes must be within [0, 65534], got -1'),
    (['--mask-alpha', '2'], '--mask-alpha: mask_alpha must be within [0.0, 1.0], got 2.0'),
    (['--max-frames', '-3'], '--max-frames cannot be negative, got -3'),
    (['--mode', 'predict', '--color-by', 'track'], '--color-by track needs --mode track'),
])
@pytest.mark.parametrize('program', PROGRAMS)
def test_refusals_name_the_flag(program, flags, message):
    with pytest.raises(common.UsageError) as error:
        common.check_args(parse(program, *flags))
    assert str(error.value).startswith(message)


@pytest.mark.parametrize('module', ['segtrack_ros.cli.video', 'segtrack_ros.cli.bag',
                                    'segtrack_ros.cli.fleet', 'segtrack_ros.eval.evaluate'])
def test_python_dash_m_runs_the_program(module):
    done = subprocess.run([sys.executable, '-m', module, '--help'], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('usage: ')  # main() ran, not only the import

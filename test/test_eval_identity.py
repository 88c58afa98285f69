"""Tests of segtrack_ros.eval.occlusion (the scenes) and eval.identity (the identity figures)."""

import sys

import numpy as np
import pytest
from segtrack_ros.eval.identity import combine, identity_metrics, tracker_file
from segtrack_ros.eval.matching import FrameResult, MIN_AREA
from segtrack_ros.eval.occlusion import occlusion_scenes, scene_truth
from segtrack_ros.eval.synthetic import CLASS_NAMES, render_frame
from ultralytics.utils import YAML


@pytest.fixture(scope='module')
def scenes():
    """Return every occlusion scene's truth, one `FrameTruth` per frame, by scene name."""
    return {name: [scene_truth(scene, t) for t in range(scene.config.frames)]
            for name, scene in occlusion_scenes().items()}


def as_results(truths, new_ids=lambda index, ids: ids):
    """Return truths as a tracker's results, ids changed by `new_ids(frame index, ids)`."""
    return [FrameResult(new_ids(index, truth.ids), truth.class_ids, np.ones(len(truth.ids)),
                        truth.masks) for index, truth in enumerate(truths)]


def test_scene_truth_is_that_of_the_rendered_frame():
    scene = occlusion_scenes()['behind']
    for t in (0, 70):
        np.testing.assert_array_equal(scene_truth(scene, t).id_map,
                                      render_frame(scene, t)[1].id_map)


def hidden_spans(truths):
    """Map id -> lengths of the spans in which it is not visible (MIN_AREA) between sightings."""
    seen = {}
    for index, truth in enumerate(truths):
        for track_id in truth.ids:
            if np.count_nonzero(truth.id_map == track_id) >= MIN_AREA:
                seen.setdefault(int(track_id), []).append(index)
    return {track_id: [int(gap) - 1 for gap in np.diff(frames) if gap > 1]
            for track_id, frames in seen.items()}


def test_scenes_stage_the_occlusions(scenes):
    behind = [span for spans in hidden_spans(scenes['behind']).values() for span in spans]
    assert len(behind) >= 3 and min(behind) >= 10 and max(behind) <= 60
    assert len([span for spans in hidden_spans(scenes['reentry']).values()
                for span in spans]) >= 2
    # leaving the frame: no pixel at all in some frames, before and after which it is seen
    for track_id in (2, 3):
        present = [track_id in truth.ids for truth in scenes['reentry']]
        assert present[0] and present[-1] and not all(present)
    scene = occlusion_scenes()['lookalike']
    assert len({(track.class_id, track.colour, track.radius) for track in scene.tracks}) == 1
    assert CLASS_NAMES[scene.tracks[0].class_id] == 'disc'
    assert all(len(truth.ids) == 20 for truth in scenes['crowd'])


def test_perfect_tracks_score_one(scenes):
    truths = scenes['behind']
    figures = combine([identity_metrics(truths, as_results(truths))])
    assert figures['IDF1'] == pytest.approx(1.0) and figures['HOTA'] == pytest.approx(1.0)
    assert figures['ID switches'] == 0


def test_an_identity_switch_is_charged(scenes):
    truths = scenes['crossing']
    half = len(truths) // 2
    # object 1 gets a new id halfway, as a tracker that lost it would give
    swapped = as_results(truths, lambda index, ids: np.where(
        (ids == 1) & (index >= half), 99, ids))
    perfect, switched = (identity_metrics(truths, results)
                         for results in (as_results(truths), swapped))
    figures = combine([switched])
    assert figures['ID switches'] == 1
    assert figures['IDF1'] < combine([perfect])['IDF1'] - 0.05
    assert figures['HOTA'] < combine([perfect])['HOTA']
    both = combine([switched, perfect])
    assert figures['IDF1'] < both['IDF1'] < 1.0 and both['ID switches'] == 1


def test_reid_variant_of_a_shipped_tracker(tmp_path):
    assert tracker_file('ocsort.yaml', tmp_path) == 'ocsort.yaml'
    settings = YAML.load(tracker_file('botsort.yaml+reid', tmp_path))
    assert settings['tracker_type'] == 'botsort'
    assert settings['with_reid'] is True and settings['model'] == 'auto'


def test_trackers_without_trackeval_name_the_fix(monkeypatch, capsys):
    from segtrack_ros.eval.evaluate import main

    monkeypatch.setitem(sys.modules, 'trackeval', None)  # import trackeval fails
    with pytest.raises(SystemExit) as exit_:
        main(['--trackers', 'bytetrack.yaml'])
    assert 'pip install trackeval' in str(exit_.value.code)

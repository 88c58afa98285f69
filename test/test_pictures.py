"""
`make pictures` (tools/pictures.py) runs, writes every picture, and writes the same ones again.

On a tiny scene, so that the pictures of docs/ cannot rot unnoticed; the committed ones must stay
small enough for a README.
"""

from pathlib import Path
import subprocess
import sys

import cv2

REPO = Path(__file__).resolve().parents[1]
FRAMES = ('predict.png', 'track.png', 'labels.png', 'from-above.png')
PLOTS = ('bench-results.png', 'bench-soak.png', 'bench-masks.png', 'bench-cameras.png',
         'bench-bag.png', 'bench-exports.png', 'bench-fleet.png')


def make_pictures(output):
    """Run tools/pictures.py on a 192x144 scene of 3 frames; return the files it wrote."""
    done = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'pictures.py'), '--output', str(output),
         '--width', '192', '--height', '144', '--frames', '3', '--bench', str(REPO / 'bench')],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {path.name: path for path in output.iterdir()}


def test_pictures_are_written_and_the_same_every_time(tmp_path):
    first = make_pictures(tmp_path / 'first')
    assert set(first) == set(FRAMES + PLOTS)
    for name, path in first.items():
        image = cv2.imread(str(path))
        assert image is not None and image.size and image.std() > 0, name
    assert cv2.imread(str(first['predict.png'])).shape == (144, 192, 3)
    assert cv2.imread(str(first['labels.png'])).shape[1] == 2 * 192
    second = make_pictures(tmp_path / 'second')
    for name in FRAMES + PLOTS:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_committed_pictures_are_small():
    pictures = sorted((REPO / 'docs').glob('*.png'))
    assert {path.name for path in pictures} >= set(FRAMES + PLOTS)
    for path in pictures:
        assert 0 < path.stat().st_size <= 200 * 1024, path.name

"""
What `segtrack-video` and `segtrack-bag` share: the segmenter flags, one error path, one summary.

Every entry of the parameter table (`params.PARAMETERS`) that names a `flag` becomes a flag of
both programs, with the entry's default, allowed values, range and description, and its value
reaches the `SegmenterConfig` or `RenderConfig` field of the same name: a parameter added to the
table with a flag needs no code here. The programs add only the flags that are theirs.
"""

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
import signal
import sys

from segtrack_ros.core.render import RenderConfig
from segtrack_ros.core.runtime import apply_process_defaults
from segtrack_ros.core.segmenter import Segmenter, SegmenterConfig, SegmenterError
from segtrack_ros.params import PARAMETERS
from segtrack_ros.runners import OrderedRunner

FLAGGED = tuple(spec for spec in PARAMETERS if spec.flag)
# The colour's default follows the mode (track ids exist in track mode only), so the flag's own
# default is None and `color_by` resolves it.
COLOR_PARAMETER = 'color_mode'


class UsageError(Exception):
    """Flags that contradict each other or are out of range."""


def add_segmenter_arguments(parser):
    """
    Add the flags made from the parameter table, and `--max-frames`, to `parser`.

    The parsed values are named after the parameters (`args.max_det`, `args.color_mode`).
    """
    for spec in FLAGGED:
        parser.add_argument(spec.flag, dest=spec.name, **_flag_options(spec))
    parser.add_argument('--max-frames', type=int, default=0,
                        help='stop after N input frames (0 = all)')


def _flag_options(spec):
    """Return the `add_argument` options of parameter `spec`: type, default, choices, help."""
    default = list(spec.default) if isinstance(spec.default, list) else spec.default
    shown = f' Default: {default}.' if default not in ('', []) else ''
    options = {'default': default, 'help': (spec.description + shown).replace('%', '%%')}
    if spec.name == COLOR_PARAMETER:
        options.update(default=None, help=spec.description + ' Default: track in track mode, '
                       'class in predict mode.')
    if spec.choices:
        options['choices'] = spec.choices
    if isinstance(default, bool):
        options['action'] = argparse.BooleanOptionalAction
    elif isinstance(default, list):  # as `ParameterSpec.check`: ranged lists hold integers
        options.update(nargs='+', type=int if spec.low is not None else str)
    else:
        options['type'] = type(default)
    return options


def check_args(args):
    """Refuse flags out of their parameter's range, or contradicting each other (UsageError)."""
    for spec in FLAGGED:
        value = getattr(args, spec.name)
        reason = None if value is None else spec.check(value)
        if reason:
            raise UsageError(f'{spec.flag}: {reason}')
    if args.color_mode == 'track' and args.mode != 'track':
        raise UsageError('--color-by track needs --mode track (predict mode has no track ids)')
    if args.max_frames < 0:
        raise UsageError(f'--max-frames cannot be negative, got {args.max_frames}')


def color_by(args):
    """Colour instances by `--color-by`, else by track in track mode and by class in predict."""
    return args.color_mode or ('track' if args.mode == 'track' else 'class')


def segmenter_config(args):
    """Return the `SegmenterConfig` of parsed `args`."""
    return _config(SegmenterConfig, args)


def render_config(args):
    """Return the `RenderConfig` of parsed `args`."""
    return _config(RenderConfig, args)


def _config(kind, args):
    values = {spec.name: getattr(args, spec.name) for spec in FLAGGED}
    values['color_by'] = color_by(args)  # the renderer's name for the resolved colour
    chosen = {item.name: values[item.name] for item in fields(kind) if item.name in values}
    return kind(**{name: tuple(value) if isinstance(value, list) else value  # frozen configs
                   for name, value in chosen.items()})


def make_segmenter(args):
    """
    Load the model and tracker of parsed `args` (SegmenterError when they cannot be used).

    What `--export-format` did (exported, or found in the cache) is said on stderr.
    """
    return Segmenter(segmenter_config(args), log=lambda line: print(line, file=sys.stderr))


@dataclass
class Summary:
    """What a run did: frames with outputs, wall time, instances, distinct (stream, track id)."""

    frames: int = 0
    seconds: float = 0.0
    instances: int = 0
    track_ids: set = field(default_factory=set, repr=False)

    @property
    def tracks(self):
        """Distinct tracks seen (each stream numbers its own)."""
        return len(self.track_ids)

    @property
    def fps(self):
        """Frames per second over the whole run."""
        return self.frames / self.seconds if self.seconds else 0.0

    def add(self, result):
        """Count the frame of pipeline result `result`: its instances and their track ids."""
        self.frames += 1
        self.instances += len(result.detections)
        if result.detections.tracked:
            self.track_ids.update((result.stream, int(i)) for i in result.detections.ids)

    def _of(self):
        """Words after the frame count that say where the frames came from."""
        return ''

    def __str__(self):
        return (f'{self.frames} frames{self._of()} in {self.seconds:.1f} s '
                f'({self.fps:.1f} fps), {self.instances} instances, {self.tracks} tracks')


@contextmanager
def ordered_results(pipeline, items, wanted, total, progress, name):
    """
    Run `items` through `pipeline` in order (`OrderedRunner`); yield the runner and a bar.

    The bar (on stderr, `progress` False hides it) counts frames up to `total` (None:
    unknown); the pipeline's threads and the bar stop when the block ends, however it ends.
    """
    from ultralytics.utils.tqdm import TQDM

    bar = TQDM(total=total, desc=name, unit='frame', disable=not progress, file=sys.stderr)
    results = OrderedRunner(pipeline, items, wanted=wanted)
    try:
        yield results, bar
    finally:
        results.close()
        bar.close()


def run_main(parser, argv, work, errors=(), interrupted=lambda args: 'interrupted'):
    """
    Parse `argv` with `parser` and return `(args, work(args))`: the body of a program's main.

    Bad flags exit with code 2; `UsageError`, `SegmenterError` and the `errors` types with 1;
    Ctrl-C and SIGTERM (turned into KeyboardInterrupt, so the same cleanup runs) with 130 and
    the message `interrupted(args)`. Each is one line on stderr: `<prog>: error: <message>`.
    """
    apply_process_defaults()
    parser.error = lambda message: fail(parser.prog, message, 2)
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args, work(args)
    except (UsageError, SegmenterError, *errors) as error:
        fail(parser.prog, error, 1)
    except KeyboardInterrupt:
        fail(parser.prog, interrupted(args), 130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def fail(prog, message, code):
    """Print `message` as one `<prog>: error:` line on stderr and exit with `code`."""
    # One line, even for multi-line messages (YAML errors, a corrupt checkpoint).
    message = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(code)

"""
Tests of `segtrack-bag`: bags written here with rosbags, run through the command, read back.

The input bags hold two cameras (raw `/front/image_raw`, JPEG `/rear/image_raw/compressed`) and
a `/chatter` topic, with bag times that differ from the header stamps, in sqlite3 and MCAP
storage and as a single `.mcap` file. The untrained model with a very low threshold finds
(random) instances, so a run does the full work; a permissive ByteTrack confirms its tracks.
The outputs are compared with `segtrack_node`'s for the same frames sent over DDS.
"""

import argparse
from collections import defaultdict
from contextlib import redirect_stderr, redirect_stdout
import io
import json
from pathlib import Path
import shutil
import signal
import sqlite3
import subprocess
import sys

from conftest import UNTRAINED_CONF
import numpy as np
import pytest
import rclpy
from rclpy.serialization import deserialize_message, serialize_message
from ros_harness import make_frame, NodeProcess, ProbeNode, RELIABLE, wait_until
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores
from segtrack_ros.cli import bag as bag_cli
from segtrack_ros.cli.common import make_segmenter
from segtrack_ros.core.segmenter import BUNDLED_MODEL, Segmenter, SegmenterConfig
from segtrack_ros.eval.synthetic import generate_scene, SceneConfig
from segtrack_ros.io import image_codec
from segtrack_ros.io.bag_io import (BagError, camera_name, check_namespace, output_topics,
                                    OUTPUT_TYPES, output_typestore, share_directory, STORAGES)
from segtrack_ros.pipeline import OUTPUTS
from segtrack_ros.ros.transport import apply_large_data_profile
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection2DArray

SCRIPT = Path(sys.executable).parent / 'segtrack-bag'
ERROR = 'segtrack-bag: error:'
FRONT, REAR, CHATTER = '/front/image_raw', '/rear/image_raw/compressed', '/chatter'
TYPES = {FRONT: 'sensor_msgs/msg/Image', REAR: 'sensor_msgs/msg/CompressedImage',
         CHATTER: 'std_msgs/msg/String'}
FRAMES = 5  # per camera
SCENE_FRAMES = 6  # per camera, generated scenes; TrackTrack confirms a track on its third frame
WIDTH, HEIGHT = 320, 240
BAG_START = 1_700_000_000 * 10**9
PERIOD = 100_000_000  # ns between a camera's frames
STAMP_LAG = 30_000_000  # the header stamps are this much earlier than the bag times
OUTPUT_CLASSES = {'annotated_image': Image, 'annotated_image/compressed': CompressedImage,
                  'instance_mask': Image, 'class_mask': Image, 'detections': Detection2DArray}
TIMEOUT = 60.0
THING = 'my_msgs/msg/Thing'  # a custom type, unknown to rosbags


def bag_time(topic, index):
    """Bag time of frame (or chatter message) `index` of `topic`: front, rear, chatter in turn."""
    return BAG_START + index * PERIOD + (FRONT, REAR, CHATTER).index(topic) * 10_000_000


def header(topic, index):
    """Header of frame `index` of `topic`: stamped before its bag time, frame_id per camera."""
    result = Header(frame_id=topic.split('/')[1] + '_optical')
    result.stamp.sec, result.stamp.nanosec = divmod(bag_time(topic, index) - STAMP_LAG,
                                                    1_000_000_000)
    return result


def frame(topic, index):
    """Return frame `index` of camera `topic` (the rear camera sees other frames)."""
    return make_frame(index + (100 if topic == REAR else 0), WIDTH, HEIGHT)


def input_messages(frames=FRAMES):
    """Yield (topic, bag time, message) of the test bag, in bag-time order."""
    for index in range(frames):
        yield FRONT, bag_time(FRONT, index), image_codec.to_image_msg(
            frame(FRONT, index), 'bgr8', header(FRONT, index))
        yield REAR, bag_time(REAR, index), image_codec.to_compressed_msg(
            frame(REAR, index), header(REAR, index))
        yield CHATTER, bag_time(CHATTER, index), String(data=f'message {index}')


def write_bag(path, storage, messages, types=TYPES, store=None):
    """Write (topic, bag time, message or CDR bytes) as a rosbag2 bag; return its path."""
    store = store or get_typestore(Stores.LATEST)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connections = {}
        for topic, time, message in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, types[topic], typestore=store)
            data = message if isinstance(message, bytes) else serialize_message(message)
            writer.write(connections[topic], time, data)
    return path


def read_bag(path):
    """Return the topic types and the (bag time, bytes) of every message of a bag, by topic."""
    messages = defaultdict(list)
    with Reader(path) as reader:
        types = {connection.topic: connection.msgtype for connection in reader.connections}
        for connection, time, data in reader.messages():
            messages[connection.topic].append((time, bytes(data)))
    return types, messages


def output_class(topic):
    """Return the message class of an output topic (`.../detections`, ...), else None."""
    names = [name for name in OUTPUT_CLASSES if topic.endswith(f'/{name}')]
    return OUTPUT_CLASSES[max(names, key=len)] if names else None


def decoded_bag(path):
    """
    Return the topic types and the (bag time, message) of a bag's messages, by topic.

    Outputs are deserialized: their CDR bytes may differ in the padding, which serialization
    leaves as it finds it. Other messages stay bytes.
    """
    types, messages = read_bag(path)
    return types, {topic: [(time, deserialize_message(data, output_class(topic))
                            if output_class(topic) else data) for time, data in written]
                   for topic, written in messages.items()}


def run_cli(argv):
    """Run `segtrack-bag` in this process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            bag_cli.main([str(arg) for arg in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def leftovers(folder):
    """Return what a run left in `folder` besides the inputs: hidden partial bags."""
    return [path.name for path in Path(folder).iterdir() if path.name.endswith('.partial')]


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """Return the input bag in each form: sqlite3 and MCAP folders, and a lone .mcap file."""
    folder = tmp_path_factory.mktemp('inputs')
    bags = {storage: write_bag(folder / f'drive_{storage}', storage, input_messages())
            for storage in STORAGES}
    bags['mcap-file'] = shutil.copy(bags['mcap'] / 'drive_mcap.mcap', folder / 'drive.mcap')
    return bags


@pytest.fixture(scope='module')
def model_flags(untrained_weights, permissive_tracker):
    """Return the model flags of every run: untrained weights, forced detections, tracking."""
    return ['--model', untrained_weights, '--device', 'cpu', '--conf', UNTRAINED_CONF,
            '--imgsz', 320, '--max-det', 6, '--tracker', permissive_tracker]


@pytest.fixture(scope='module')
def annotated(inputs, model_flags, tmp_path_factory):
    """Run the two cameras of each input form once; return {form: (output, code, out, err)}."""
    folder = tmp_path_factory.mktemp('annotated')
    runs = {}
    for form, bag in inputs.items():
        output = folder / f'out_{form.replace("-", "_")}'
        runs[form] = (output, *run_cli([bag, output, '--topic', FRONT, '--topic', REAR,
                                        *model_flags]))
    return runs


def decode_mask(message):
    """Return a mono16 Image message as an H x W uint16 array."""
    assert (message.encoding, message.width, message.height) == ('mono16', WIDTH, HEIGHT)
    return np.frombuffer(bytes(message.data), np.uint16).reshape(HEIGHT, WIDTH)


@pytest.fixture(scope='module')
def class_ids(untrained_weights):
    """Return the untrained model's {class name: class id}."""
    from ultralytics import YOLO

    return {name: class_id for class_id, name in YOLO(untrained_weights).names.items()}


@pytest.mark.parametrize('form', ['sqlite3', 'mcap', 'mcap-file'])
def test_outputs_read_back(annotated, inputs, class_ids, form):
    """Topics, types, counts, bag times, headers and content of every output; copies intact."""
    output, code, out, err = annotated[form]
    assert code == 0, err
    assert f'{2 * FRAMES} frames of 2 topic(s)' in out and 'no frame skipped' in out, out
    assert str(output) in out and not leftovers(output.parent)
    metadata = (output / 'metadata.yaml').read_text()
    assert 'storage_identifier: mcap' in metadata and (output / f'{output.name}.mcap').is_file()

    types, messages = read_bag(output)
    _, originals = read_bag(inputs[form])
    expected = dict(TYPES)
    for camera in ('front', 'rear'):
        expected.update({f'/segtrack/{camera}/{name}': kind
                         for name, kind in OUTPUT_TYPES.items()})
    assert types == expected
    for topic in TYPES:  # copied unchanged: same bytes at the same bag times
        assert messages[topic] == originals[topic]

    for topic, camera in ((FRONT, 'front'), (REAR, 'rear')):
        outputs = {name: messages[f'/segtrack/{camera}/{name}'] for name in OUTPUT_TYPES}
        for name, written in outputs.items():
            assert [time for time, _ in written] == [bag_time(topic, i) for i in range(FRAMES)]
        for index in range(FRAMES):
            decoded = {name: deserialize_message(outputs[name][index][1], OUTPUT_CLASSES[name])
                       for name in OUTPUT_TYPES}
            assert all(m.header == header(topic, index) for m in decoded.values())
            annotated_image = decoded['annotated_image']
            assert (annotated_image.encoding, annotated_image.width,
                    annotated_image.height) == ('bgr8', WIDTH, HEIGHT)
            jpeg = image_codec.decode_compressed(decoded['annotated_image/compressed'])
            assert jpeg.shape == (HEIGHT, WIDTH, 3)
            instance = decode_mask(decoded['instance_mask'])
            classes = decode_mask(decoded['class_mask'])
            detections = decoded['detections'].detections
            for detection in detections:
                assert detection.header == header(topic, index)
                hypothesis = detection.results[0].hypothesis
                assert 0 < hypothesis.score <= 1
                assert 0 < detection.bbox.size_x <= WIDTH and 0 < detection.bbox.size_y
                pixels = instance == int(detection.id)
                assert set(np.unique(classes[pixels])) <= {class_ids[hypothesis.class_id] + 1}
            ids = {int(d.id) for d in detections}
            assert len(ids) == len(detections)
            assert set(np.unique(instance)) - {0} <= ids
            assert (instance > 0).sum() == (classes > 0).sum()
        assert any(deserialize_message(data, Detection2DArray).detections
                   for _, data in outputs['detections']), f'nothing found on {topic}'


def test_one_segmenter_for_several_bags(annotated, inputs, model_flags, tmp_path):
    """
    The API for segtrack-fleet: one model, bag after bag; each bag as if run on its own.

    Its tracks are reset between the bags: the second output equals the first, and both the
    console script's.
    """
    parser = argparse.ArgumentParser()
    bag_cli.add_bag_arguments(parser)
    args = parser.parse_args([str(flag) for flag in ['--topic', FRONT, '--topic', REAR,
                                                     *model_flags]])
    segmenter = make_segmenter(args)
    outputs = [tmp_path / 'first', tmp_path / 'second']
    for output in outputs:
        summary = bag_cli.process_bag(args, segmenter, inputs['mcap'], output)
        assert (summary.frames, summary.topics, summary.copied) == (2 * FRAMES, 2, 3 * FRAMES)
        assert summary.instances > 0 and summary.tracks > 0 and summary.fps > 0
    assert decoded_bag(outputs[0]) == decoded_bag(outputs[1]) == decoded_bag(
        annotated['mcap'][0])


def test_sqlite3_output_holds_the_same_messages(annotated, inputs, model_flags, tmp_path):
    """--storage sqlite3 writes a .db3 bag with the very bytes of the MCAP output."""
    output = tmp_path / 'out_sqlite3'
    code, out, err = run_cli([inputs['sqlite3'], output, '--topic', FRONT, '--topic', REAR,
                              '--storage', 'sqlite3', *model_flags])
    assert code == 0, err
    assert 'storage_identifier: sqlite3' in (output / 'metadata.yaml').read_text()
    assert (output / f'{output.name}.db3').is_file()
    assert decoded_bag(output) == decoded_bag(annotated['sqlite3'][0])


def test_outputs_are_the_pipelines():
    """The bag writes every output the pipeline makes, no other."""
    assert set(OUTPUT_TYPES) == set(OUTPUTS)


def test_output_types_are_the_installed_definitions():
    """The outputs' RIHS01 hashes equal those rosidl generated for the installed packages."""
    store = output_typestore()
    for msgtype in set(OUTPUT_TYPES.values()):
        package, _, name = msgtype.split('/')
        description = json.loads(
            (share_directory(package) / 'msg' / f'{name}.json').read_text())
        hashes = {h['type_name']: h['hash_string'] for h in description['type_hashes']}
        assert store.hash_rihs01(msgtype) == hashes[msgtype]


@pytest.mark.parametrize('topic, namespace, expected', [
    ('/front/image_raw', '/segtrack', '/segtrack/front'),
    ('/front/image_raw/compressed', '/segtrack', '/segtrack/front'),
    ('/cam/left/image_rect_color', '/segtrack', '/segtrack/cam/left'),
    ('/front/image', '/', '/front'),
    ('/front_camera', '/segtrack', '/segtrack/front_camera'),
    ('/image_raw', '/segtrack', '/segtrack'),
    ('/image', '/', ''),
    ('/front/image_raw', '/robot/seg', '/robot/seg/front'),
])
def test_output_topic_names(topic, namespace, expected):
    """Outputs go under <namespace>/<camera>, the camera being the topic without image_*."""
    assert output_topics(topic, namespace) == {name: f'{expected}/{name}'
                                               for name in OUTPUT_TYPES}
    assert camera_name(topic) == expected.removeprefix(namespace.rstrip('/')).strip('/')


@pytest.mark.parametrize('namespace, expected', [
    ('segtrack', '/segtrack'), ('/a/b/', '/a/b'), ('/', '/'), ('', '/')])
def test_namespaces(namespace, expected):
    """Namespaces become absolute."""
    assert check_namespace(namespace) == expected


@pytest.mark.parametrize('namespace', ['bad name', '/a//b', '/1abc', '/a-b'])
def test_bad_namespaces_are_refused(namespace):
    """A namespace that is no ROS name is refused."""
    with pytest.raises(BagError, match='not a ROS namespace'):
        check_namespace(namespace)


def test_no_copy_root_namespace_and_max_frames(inputs, model_flags, tmp_path):
    """
    --no-copy writes only outputs; --namespace / puts them at /<camera>; frames in bag order.

    A topic may be given without its leading /, and twice.
    """
    output = tmp_path / 'outputs_only'
    code, out, err = run_cli([inputs['mcap'], output, '--topic', 'front/image_raw', '--topic',
                              REAR, '--topic', FRONT, '--no-copy', '--namespace', '/',
                              '--max-frames', 5, *model_flags])
    assert code == 0, err
    assert '5 frames of 2 topic(s)' in out and '0 messages copied' in out, out
    types, messages = read_bag(output)
    assert set(types) == {f'/{camera}/{name}' for camera in ('front', 'rear')
                          for name in OUTPUT_TYPES}
    # Bag order is front, rear, chatter per index: five frames are front 0-2 and rear 0-1.
    assert [t for t, _ in messages['/front/detections']] == [bag_time(FRONT, i) for i in range(3)]
    assert [t for t, _ in messages['/rear/detections']] == [bag_time(REAR, i) for i in range(2)]


def test_max_frames_copies_up_to_the_next_frame_in_predict_mode(inputs, model_flags, tmp_path):
    """With --max-frames the copy ends where reading stopped; predict mode numbers 1..N."""
    output = tmp_path / 'three_frames'
    code, out, err = run_cli([inputs['sqlite3'], output, '--topic', FRONT, '--max-frames', 3,
                              '--mode', 'predict', '--namespace', 'robot/seg', *model_flags])
    assert code == 0, err
    types, messages = read_bag(output)
    assert set(types) == set(TYPES) | {f'/robot/seg/front/{name}' for name in OUTPUT_TYPES}
    # Front frame 3 stops the reading: everything before it is copied, nothing after.
    assert [t for t, _ in messages[FRONT]] == [bag_time(FRONT, i) for i in range(3)]
    assert [t for t, _ in messages[REAR]] == [bag_time(REAR, i) for i in range(3)]
    assert [t for t, _ in messages[CHATTER]] == [bag_time(CHATTER, i) for i in range(3)]
    for _, data in messages['/robot/seg/front/detections']:
        ids = [int(d.id) for d in deserialize_message(data, Detection2DArray).detections]
        assert ids == list(range(1, len(ids) + 1))
    assert ids


def test_malformed_frames_are_skipped_counted_and_named(model_flags, tmp_path):
    """A frame with too little data and one that is no CDR: skipped, named; the rest written."""
    messages = []
    for topic, time, message in input_messages():
        if topic == FRONT and time == bag_time(FRONT, 1):
            message.data = bytes(100)
        if topic == FRONT and time == bag_time(FRONT, 3):
            message = b'\x00\x01\x00\x00not an image'
        messages.append((topic, time, message))
    bag = write_bag(tmp_path / 'damaged', 'mcap', messages)
    output = tmp_path / 'out'
    code, out, err = run_cli([bag, output, '--topic', FRONT, '--topic', REAR, *model_flags])
    assert code == 0, err
    assert f'{2 * FRAMES - 2} frames of 2 topic(s)' in out and '2 malformed frame(s)' in out, out
    skipped = [line for line in out.splitlines() if line.startswith('  skipped ')]
    assert len(skipped) == 2, out
    assert skipped[0].startswith(f'  skipped {FRONT} at bag time 1700000000.100000000 s: ')
    assert 'data has 100 bytes' in skipped[0]
    assert skipped[1].startswith(f'  skipped {FRONT} at bag time 1700000000.300000000 s: ')
    assert 'failed to deserialize' in skipped[1]
    _, written = read_bag(output)
    _, original = read_bag(bag)
    assert written[FRONT] == original[FRONT]  # the damaged frames are copied as they were
    assert [t for t, _ in written['/segtrack/front/detections']] == [
        bag_time(FRONT, i) for i in (0, 2, 4)]
    assert len(written['/segtrack/rear/instance_mask']) == FRAMES


def clashing_bags(folder):
    """
    Return two bags where outputs would clash: with another topic, and with each other.

    The first already has a topic where front's outputs would go; the second has the front
    camera twice, raw and compressed.
    """
    earlier = '/segtrack/front/detections'
    clash = write_bag(folder / 'clashing', 'mcap',
                      [*input_messages(1), (earlier, BAG_START, String(data='an earlier run'))],
                      {**TYPES, earlier: 'std_msgs/msg/String'})
    twins = write_bag(folder / 'twins', 'mcap', [
        (FRONT, BAG_START, image_codec.to_image_msg(frame(FRONT, 0), 'bgr8', header(FRONT, 0))),
        (f'{FRONT}/compressed', BAG_START, image_codec.to_compressed_msg(frame(FRONT, 0),
                                                                         header(FRONT, 0)))],
        {FRONT: TYPES[FRONT], f'{FRONT}/compressed': TYPES[REAR]})
    return clash, twins


@pytest.mark.parametrize('case, flags, code, message', [
    ('no such bag', ['{tmp}/missing', '{tmp}/out'], 1, "bag '{tmp}/missing' not found"),
    ('folder, no bag', ['{tmp}', '{tmp}/out'], 1, 'it has no metadata.yaml'),
    ('not an mcap', ['{tmp}/junk.mcap', '{tmp}/out'], 1, 'cannot be read: File magic'),
    ('topic missing', ['{mcap}', '{tmp}/out', '--topic', '/left/image_raw'], 1,
     "topic '/left/image_raw' is not in bag '{mcap}'; image topics in the bag: "
     '/front/image_raw (Image), /rear/image_raw/compressed (CompressedImage)'),
    ('not an image', ['{mcap}', '{tmp}/out', '--topic', CHATTER], 1,
     "topic '/chatter' is std_msgs/msg/String, not sensor_msgs/msg/Image or"),
    ('output exists', ['{mcap}', '{tmp}'], 1, "output '{tmp}' exists already"),
    ('no output folder', ['{mcap}', '{tmp}/a/b'], 1, "folder '{tmp}/a' does not exist"),
    ('one camera twice', ['{twins}', '{tmp}/out', '--topic', FRONT, '--topic',
                          f'{FRONT}/compressed'], 1, f"'{FRONT}' and '{FRONT}/compressed' would "
     "both write '/segtrack/front/annotated_image'"),
    ('colour by track', ['{mcap}', '{tmp}/out', '--mode', 'predict', '--color-by', 'track'], 1,
     '--color-by track needs --mode track'),
    ('conf', ['{mcap}', '{tmp}/out', '--conf', '2'], 1, '--conf: conf must be within'),
    ('namespace', ['{mcap}', '{tmp}/out', '--namespace', 'a b'], 1, 'not a ROS namespace'),
    ('storage', ['{mcap}', '{tmp}/out', '--storage', 'zip'], 2, "invalid choice: 'zip'"),
    ('no topic', ['{mcap}', '{tmp}/out', '--no-topic'], 2, 'the following arguments are '
     'required: --topic'),
    ('model', ['{mcap}', '{tmp}/out', '--model', '{tmp}/none.pt'], 1, "model '{tmp}/none.pt' "
     'not found'),
    ('clash', ['{clash}', '{tmp}/out'], 1, "output topic '/segtrack/front/detections' of "
     "'/front/image_raw' is in the input bag already"),
])
def test_bad_input_is_one_line_and_nothing_written(inputs, tmp_path, case, flags, code,
                                                   message):
    """Each refusal: its exit code, one error line naming the problem, no output, no leftovers."""
    (tmp_path / 'junk.mcap').write_bytes(b'not an mcap file at all')
    values = {'tmp': tmp_path, 'mcap': inputs['mcap']}
    values['clash'], values['twins'] = clashing_bags(tmp_path)
    argv = [flag.format(**values) for flag in flags]
    if '--topic' not in argv and case != 'no topic':
        argv += ['--topic', FRONT]
    argv = [flag for flag in argv if flag != '--no-topic']
    result, out, err = run_cli(argv)
    assert result == code, (out, err)
    assert err.count('\n') == 1 and err.startswith(ERROR), err
    assert message.format(**values) in err, err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)
    assert not leftovers(inputs['mcap'].parent)


def test_tracker_with_a_yaml_error_is_one_line(inputs, model_flags, tmp_path):
    """A tracker file that is no YAML: one error line naming it, no traceback, nothing written."""
    tracker = tmp_path / 'broken_tracker.yaml'
    tracker.write_text('tracker_type: bytetrack\ntrack_high_thresh: [0.5\nmatch_thresh: 0.8\n')
    flags = [str(flag) for flag in model_flags]
    flags[flags.index('--tracker') + 1] = str(tracker)
    code, out, err = run_cli([inputs['mcap'], tmp_path / 'out', '--topic', FRONT, *flags])
    assert code == 1, (out, err)
    assert err.count('\n') == 1 and err.startswith(ERROR), err
    assert 'broken_tracker.yaml' in err and 'not valid YAML' in err, err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def test_unreadable_middle_fails_and_leaves_nothing(inputs, model_flags, tmp_path):
    """A bag that breaks while it is read (a zeroed sqlite page): one error line, no output."""
    bag = tmp_path / 'broken'
    shutil.copytree(inputs['sqlite3'], bag)
    database = bag / 'drive_sqlite3.db3'
    data = bytearray(database.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle:middle + 4096] = bytes(4096)
    database.write_bytes(data)
    code, out, err = run_cli([bag, tmp_path / 'out', '--topic', FRONT, *model_flags])
    assert code == 1, (out, err)
    errors = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and 'cannot be read to the end' in errors[0], err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def test_bag_without_definitions_or_hashes_is_copied(model_flags, tmp_path):
    """
    A Humble-style sqlite3 bag (no definitions, no type hashes): copies get both written.

    A custom type that only the bag could have defined is not copied, with a warning.
    """
    store = get_typestore(Stores.LATEST)
    store.register(get_types_from_msg('int32 value', THING))
    thing = store.serialize_cdr(store.types[THING](value=7), THING).tobytes()
    messages = [*input_messages(2), ('/thing', BAG_START, thing)]
    bag = write_bag(tmp_path / 'humble', 'sqlite3', messages, {**TYPES, '/thing': THING}, store)
    metadata = bag / 'metadata.yaml'
    metadata.write_text('\n'.join(line for line in metadata.read_text().splitlines()
                                  if 'type_description_hash' not in line and 'RIHS01' not in line))
    with sqlite3.connect(bag / 'humble.db3') as database:
        database.execute("UPDATE topics SET type_description_hash = ''")
        database.execute('DELETE FROM message_definitions')
    with Reader(bag) as reader:
        assert not any(c.digest or c.msgdef.data for c in reader.connections)
    output = tmp_path / 'out'
    code, _, err = run_cli([bag, output, '--topic', FRONT, *model_flags])
    assert code == 0, err
    assert (f"segtrack-bag: warning: '/thing' not copied: neither the bag nor rosbags' ROS 2 "
            f'types define {THING}') in err
    with Reader(output) as reader:
        copies = {c.topic: c for c in reader.connections if c.topic in TYPES}
        assert set(copies) == set(TYPES) and '/thing' not in reader.topics
        for connection in copies.values():
            assert connection.digest == store.hash_rihs01(connection.msgtype)
            assert connection.msgdef.data


def test_sigterm_stops_the_console_script_and_leaves_nothing(model_flags, tmp_path):
    """SIGTERM in the middle of a run: exit 130, one error line, no output, no leftovers."""
    messages = ((FRONT, bag_time(FRONT, index), image_codec.to_image_msg(
        make_frame(index, 160, 120), 'bgr8', header(FRONT, index))) for index in range(200))
    bag = write_bag(tmp_path / 'long', 'mcap', messages)
    flags = [str(flag) for flag in model_flags]
    flags[flags.index('--imgsz') + 1] = '640'  # slower frames: the run is still going
    process = subprocess.Popen([str(SCRIPT), str(bag), str(tmp_path / 'out'), '--topic', FRONT,
                                *flags], stderr=subprocess.PIPE, text=True)
    seen = ''
    while '/200' not in seen:  # the progress bar is up: frames are being processed
        character = process.stderr.read(1)
        assert character, seen
        seen += character
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, seen + rest
    errors = [line for line in rest.splitlines() if ERROR in line]
    assert len(errors) == 1 and 'interrupted' in errors[0], rest
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def test_outputs_equal_the_nodes(inputs, annotated, untrained_weights, permissive_tracker):
    """
    segtrack_node fed the front frames one at a time publishes the bag's outputs, field by field.

    The bag interleaves the rear camera's frames; the node sees the front ones only, so equal
    ids also show that each topic has its own tracker.
    """
    namespace = '/bag_reference'
    apply_large_data_profile()
    rclpy.init()
    probe = ProbeNode('segtrack_bag_test')
    process = NodeProcess('segtrack_node', {
        'model': untrained_weights, 'device': 'cpu', 'conf': UNTRAINED_CONF, 'imgsz': 320,
        'max_det': 6, 'mode': 'track', 'tracker': permissive_tracker, 'color_mode': 'track',
        'qos_reliability': 'reliable'}, namespace)
    try:
        collectors = {name: probe.collect(kind, f'{namespace}/{name}')
                      for name, kind in OUTPUT_CLASSES.items()}
        publisher = probe.publisher(Image, f'{namespace}/image', RELIABLE)
        assert probe.wait_for_graph(
            lambda node: node.count_subscribers(f'{namespace}/image') > 0
            and all(node.count_publishers(f'{namespace}/{name}') > 0
                    for name in OUTPUT_CLASSES), TIMEOUT), process.output

        def answered():  # a frame stamped long before the bag's, until every output arrives
            warm_up = Header(frame_id='warm_up')
            warm_up.stamp.sec = 1
            publisher.publish(image_codec.to_image_msg(make_frame(99, WIDTH, HEIGHT), 'bgr8',
                                                       warm_up))
            return all(c.wait_for_count(1, 0.5) for c in collectors.values())
        assert wait_until(answered, TIMEOUT), process.output
        reset = probe.node.create_client(Trigger, f'{namespace}/segtrack_node/reset_tracker')
        assert reset.wait_for_service(timeout_sec=TIMEOUT)
        assert wait_until(reset.call_async(Trigger.Request()).done)

        _, messages = decoded_bag(annotated['mcap'][0])
        _, originals = read_bag(inputs['mcap'])
        for index, (_, data) in enumerate(originals[FRONT]):
            stamp = header(FRONT, index).stamp
            publisher.publish(deserialize_message(data, Image))
            for name, collector in collectors.items():
                assert wait_until(lambda: collector.by_stamp(stamp), TIMEOUT), name
                from_bag = messages[f'/segtrack/front/{name}'][index][1]
                assert collector.by_stamp(stamp)[0] == from_bag, (name, index)
    finally:
        process.stop()
        probe.destroy()
        rclpy.try_shutdown()
    assert 'Traceback' not in process.output, process.output


def test_default_tracker_gives_each_topic_the_cores_ids(tmp_path):
    """
    The default tracker (TrackTrack, ReID from the detector) over two cameras' generated scenes.

    The bundled model finds the shapes. Each topic's ids, classes and boxes, frame by frame,
    equal the core's for that camera's frames as its own stream: the cameras' tracks never mix.
    """
    messages, inputs = [], {FRONT: [], REAR: []}  # what the core sees: the decoded frames
    scenes = {topic: generate_scene(SceneConfig(width=WIDTH, height=HEIGHT, frames=SCENE_FRAMES,
                                                objects=6, seed=seed))
              for topic, seed in ((FRONT, 21), (REAR, 22))}
    for index, ((front, _), (rear, _)) in enumerate(zip(scenes[FRONT], scenes[REAR])):
        rear_message = image_codec.to_compressed_msg(rear, header(REAR, index))
        messages += [(FRONT, bag_time(FRONT, index),
                      image_codec.to_image_msg(front, 'bgr8', header(FRONT, index))),
                     (REAR, bag_time(REAR, index), rear_message)]
        inputs[FRONT].append(front)
        inputs[REAR].append(image_codec.decode_compressed(rear_message))
    output = tmp_path / 'out'
    code, out, err = run_cli([write_bag(tmp_path / 'scenes', 'mcap', messages), output,
                              '--topic', FRONT, '--topic', REAR, '--model', BUNDLED_MODEL,
                              '--device', 'cpu', '--imgsz', 320])
    assert code == 0, err
    assert f'{2 * SCENE_FRAMES} frames of 2 topic(s)' in out, out
    _, written = decoded_bag(output)

    core = Segmenter(SegmenterConfig(model=str(BUNDLED_MODEL), device='cpu', mode='track',
                                     imgsz=320))
    try:
        expected = {topic: [] for topic in inputs}
        for index in range(SCENE_FRAMES):  # in bag order, each camera its own stream
            for topic, frames in inputs.items():
                expected[topic].append(core.process(frames[index], topic))
        names = core.class_names
    finally:
        core.release()
    for topic, camera in ((FRONT, 'front'), (REAR, 'rear')):
        arrays = written[f'/segtrack/{camera}/detections']
        assert len(arrays) == SCENE_FRAMES
        for index, ((_, array), want) in enumerate(zip(arrays, expected[topic])):
            got = array.detections
            assert [int(d.id) for d in got] == want.ids.tolist(), (topic, index)
            assert [d.results[0].hypothesis.class_id for d in got] == [
                names[int(c)] for c in want.class_ids], (topic, index)
            centers = [(d.bbox.center.position.x, d.bbox.center.position.y) for d in got]
            np.testing.assert_allclose(np.reshape(centers, (-1, 2)),
                                       (want.boxes[:, :2] + want.boxes[:, 2:]) / 2, atol=1e-3)
        assert len({i for d in expected[topic] for i in d.ids}) > 2, f'few tracks on {topic}'

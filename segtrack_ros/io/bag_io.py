"""
Recorded rosbag2 bags in and out with `rosbags` (pure Python): no ROS install needed.

This module owns opening a bag (a rosbag2 folder in sqlite3 or MCAP storage, or a single `.mcap`
file) with errors that name the problem, the image topics a run may take, the names of the
output topics, the message definitions written with them (vision_msgs registered from its
installed `.msg` files), and a bag writer whose output appears only once it is complete.
Messages stay serialized (CDR bytes) here, but for the frames read and the outputs written,
which `rclpy.serialization` turns into and from rclpy's messages (no node or context needed).
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
import importlib.util
from pathlib import Path
import re
import shutil
import tempfile
import threading

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import get_types_from_idl, get_types_from_msg, get_typestore, Stores
from rosbags.typesys import TypesysError
from sensor_msgs.msg import CompressedImage, Image

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
_IMAGE_CLASSES = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage}
# The node's outputs (relative topic names) and their types.
OUTPUT_TYPES = {
    'annotated_image': IMAGE,
    'annotated_image/compressed': COMPRESSED_IMAGE,
    'instance_mask': IMAGE,
    'class_mask': IMAGE,
    'detections': 'vision_msgs/msg/Detection2DArray',
}
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
DEFAULT_NAMESPACE = '/segtrack'
BAG_VERSION = 9
_NAME_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_DEFINITION_SEPARATOR = '=' * 80 + '\n'


class BagError(Exception):
    """A bag that cannot be read or written, or a topic it lacks; the message names the fix."""


class InputBag:
    """
    An open input bag: its topics, and its messages in bag-time order.

    >>> with InputBag('drive') as bag:
    ...     for connection, bag_time, data in bag.messages(bag.connections): ...
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag '{self.path}' not found: give a rosbag2 folder or a .mcap file")
        if self.path.is_dir() and not (self.path / 'metadata.yaml').is_file():
            raise BagError(f"'{self.path}' is not a rosbag2 folder: it has no metadata.yaml")
        try:
            self._reader = Reader(self.path)
        except (ReaderError, OSError) as error:
            raise BagError(f"bag '{self.path}' cannot be read: {error}") from error

    def __enter__(self):
        try:
            self._reader.open()
        except (ReaderError, OSError) as error:
            raise BagError(f"bag '{self.path}' cannot be read: {error}") from error
        return self

    def __exit__(self, *exc_info):
        self._reader.close()

    @property
    def connections(self):
        """Every connection (topic, type, definition, QoS) of the bag."""
        return self._reader.connections

    def topic_types(self):
        """Return {topic: message type}; None for a topic recorded with several types."""
        return {topic: info.msgtype for topic, info in self._reader.topics.items()}

    def image_connections(self, topic):
        """
        Return the connections of image topic `topic` (absolute, as bags name topics).

        Raises BagError for a topic the bag lacks or one that is no Image or CompressedImage,
        listing the bag's image topics.
        """
        types = self.topic_types()
        if topic not in types:
            raise BagError(f"topic '{topic}' is not in bag '{self.path}'; {self._image_list()}")
        if types[topic] not in IMAGE_TYPES:
            kind = types[topic] or 'of several types'
            raise BagError(f"topic '{topic}' is {kind}, not {IMAGE} or {COMPRESSED_IMAGE}; "
                           f'{self._image_list()}')
        return [c for c in self.connections if c.topic == topic]

    def _image_list(self):
        images = [f"{topic} ({kind.rsplit('/', 1)[-1]})"
                  for topic, kind in sorted(self.topic_types().items()) if kind in IMAGE_TYPES]
        if not images:
            return 'the bag has no sensor_msgs Image or CompressedImage topic'
        return 'image topics in the bag: ' + ', '.join(images)

    def messages(self, connections):
        """Yield (connection, bag time in ns, CDR bytes) of `connections`, in bag-time order."""
        try:
            yield from self._reader.messages(connections)
        except Exception as error:  # the storages raise their own types: apsw, zstd, rosbags
            raise BagError(f"bag '{self.path}' cannot be read to the end: "
                           f'{error.__class__.__name__}: {error}') from error


def deserialize_image(data, msgtype):
    """Turn the CDR bytes of a frame of type `msgtype` into rclpy's Image or CompressedImage."""
    return deserialize_message(bytes(data), _IMAGE_CLASSES[msgtype])


def check_namespace(namespace):
    """Return `namespace` as an absolute ROS namespace ('/' for none); BagError if invalid."""
    tokens = [token for token in namespace.strip('/').split('/') if token]
    if '//' in namespace or not all(_NAME_TOKEN.fullmatch(token) for token in tokens):
        raise BagError(f"namespace '{namespace}' is not a ROS namespace: use names of letters, "
                       'digits and _ separated by /, e.g. /segtrack')
    return '/' + '/'.join(tokens)


def camera_name(topic):
    """
    Name the camera of image topic `topic`, as the part of the topic its outputs share.

    A trailing `compressed` (image_transport's) and then a trailing `image` or `image_*`
    component (image_raw, image_rect_color, ...) are dropped: `/front/image_raw`,
    `/front/image_raw/compressed` and `/front/image` name camera `front`. A topic without
    them is the camera's whole name (`/front_camera`); `/image_raw` names none ('').
    """
    parts = [part for part in topic.split('/') if part]
    if parts and parts[-1] == 'compressed':
        parts.pop()
    if parts and (parts[-1] == 'image' or parts[-1].startswith('image_')):
        parts.pop()
    return '/'.join(parts)


def output_topics(topic, namespace=DEFAULT_NAMESPACE):
    """
    Return {output name: topic} of the outputs of image topic `topic`.

    `/front/image_raw` with namespace `/segtrack` gives `/segtrack/front/annotated_image`,
    `/segtrack/front/detections`, ...: the node's topics, for a node in namespace
    `<namespace>/<camera>` (see `camera_name`).
    """
    base = '/'.join(part for part in (namespace.strip('/'), camera_name(topic)) if part)
    return {name: f'/{base}/{name}' if base else f'/{name}' for name in OUTPUT_TYPES}


def output_typestore():
    """
    Return a `rosbags` type store that knows the output types and the standard ROS 2 messages.

    vision_msgs is not among rosbags' built-in types: its definitions are read from the
    installed package's `share/vision_msgs/msg/*.msg`, found through the ament index (a ROS
    install) or beside the Python package (the pip venv, which has no AMENT_PREFIX_PATH).
    """
    store = get_typestore(Stores.LATEST)
    folder = share_directory('vision_msgs') / 'msg'
    files = sorted(folder.glob('*.msg'))
    if not files:
        raise BagError(f'vision_msgs message definitions not found in {folder}: install '
                       'vision_msgs (rosdep on a ROS install, `make venv` on the pip route)')
    types = {}
    for path in files:
        types.update(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
    store.register(types)
    return store


def share_directory(package):
    """Return the share directory of installed ROS package `package`."""
    with suppress(LookupError, OSError):  # OSError: no AMENT_PREFIX_PATH (a pip venv)
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise BagError(f'ROS package {package} is not installed')
    # <prefix>/lib/pythonX.Y/site-packages/<package>/__init__.py -> <prefix>/share/<package>
    return Path(spec.origin).resolve().parents[4] / 'share' / package


def copy_definition(connection, store):
    """
    Return (definition, RIHS01 hash) to write `connection`'s messages under, or None.

    They are the input's own when it has both. Bags of older ROS releases lack the hash (no
    type hashes before Iron) or the definition too (Humble's sqlite3): the hash is then computed
    from the input's definition, and a missing definition taken from `store`. None when neither
    the bag nor `store` defines the type.
    """
    definition = connection.msgdef
    digest = connection.digest
    if definition.format != MessageDefinitionFormat.NONE and digest:
        return definition.data, digest
    try:
        if definition.format == MessageDefinitionFormat.NONE:
            text, _ = store.generate_msgdef(connection.msgtype, ros_version=2)
            return text, digest or store.hash_rihs01(connection.msgtype)
        own = get_typestore(Stores.EMPTY)
        own.register(_types_of(definition, connection.msgtype))
        return definition.data, own.hash_rihs01(connection.msgtype)
    except (TypesysError, KeyError, ValueError):
        return None


def _types_of(definition, msgtype):
    """Parse a connection's .msg or .idl definition into rosbags types."""
    if definition.format == MessageDefinitionFormat.MSG:
        return get_types_from_msg(definition.data, msgtype)
    types = {}
    for section in definition.data.split(_DEFINITION_SEPARATOR):
        if section.startswith('IDL: '):
            types.update(get_types_from_idl(section.split('\n', 1)[1]))
    return types


def check_output(path):
    """Refuse an output path that exists or whose folder does not (BagError)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise BagError(f"output '{path}' exists already: give the name of a new folder "
                       '(bags are never overwritten)')
    if not path.parent.is_dir():
        raise BagError(f"output '{path}': folder '{path.parent}' does not exist")


class OutputBag:
    """
    A new rosbag2 bag that appears only complete, or not at all.

    It is written in a hidden temporary folder beside `path` and renamed to `path` when the
    block ends without an error; on an error (or Ctrl-C) the temporary folder is removed. All
    storage calls run on one thread of the bag's own (sqlite3 connections belong to the thread
    that made them), so `write` may be called from any thread; it returns once the message is
    queued, and waits while `QUEUED` messages are.

    >>> with OutputBag('annotated', 'mcap') as bag:
    ...     connection = bag.add_connection('/segtrack/front/detections', msgtype, msgdef, rihs01)
    ...     bag.write(connection, bag_time, data)
    """

    QUEUED = 32

    def __init__(self, path, storage='mcap'):
        self.path = Path(path)
        self.storage = storage
        check_output(self.path)
        self._folder = None
        self._writer = None
        self._thread = None
        self._slots = threading.BoundedSemaphore(self.QUEUED)
        self._failure = None

    def __enter__(self):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix='bag-writer')
        try:
            self._folder = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.',
                                                 suffix='.partial', dir=self.path.parent))
            self._writer = self._thread.submit(self._open).result()
        except (WriterError, OSError) as error:
            self._close_thread()
            raise BagError(f"output '{self.path}' cannot be written: {error}") from error
        return self

    def _open(self):
        # The bag folder inside keeps its final name, which rosbag2 repeats in its files.
        writer = Writer(self._folder / self.path.name, version=BAG_VERSION,
                        storage_plugin=STORAGES[self.storage])
        writer.open()
        return writer

    def add_connection(self, topic, msgtype, msgdef, rihs01, qos_profiles=()):
        """Add a topic of type `msgtype` with its definition and hash; return its connection."""
        return self._thread.submit(
            self._writer.add_connection, topic, msgtype, msgdef=msgdef, rihs01=rihs01,
            offered_qos_profiles=qos_profiles).result()

    def write(self, connection, bag_time, data):
        """Queue serialized message `data` on `connection` at `bag_time` (ns) for writing."""
        self._raise_failure()
        self._slots.acquire()
        self._thread.submit(self._writer.write, connection, bag_time,
                            data).add_done_callback(self._written)

    def write_message(self, connection, bag_time, message):
        """Serialize rclpy message `message` and queue it on `connection` at `bag_time` (ns)."""
        self.write(connection, bag_time, serialize_message(message))

    def _written(self, future):
        self._slots.release()
        if future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def _raise_failure(self):
        if self._failure is not None:
            raise BagError(f"output '{self.path}' cannot be written: "
                           f'{self._failure}') from self._failure

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            if exc_type is not None:
                self._thread.submit(self._writer.abort).result()
                return
            try:
                self._thread.submit(self._writer.close).result()
                self._raise_failure()
                check_output(self.path)  # nothing appeared there while we wrote
                (self._folder / self.path.name).rename(self.path)
            except (WriterError, OSError) as error:
                raise BagError(f"output '{self.path}' cannot be written: {error}") from error
        finally:
            self._close_thread()

    def _close_thread(self):
        self._thread.shutdown(wait=True, cancel_futures=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

"""
Why no camera messages arrive on a subscription, said once in the log and kept for diagnostics.

"Nothing is published" is the question users of every image node ask most: a wrong topic, a QoS
mismatch, raw versus compressed. `InputHealth` watches one camera subscription, from the ROS graph
and from the subscription's incompatible-QoS event, and names the cause and its fix.
"""

import threading
import time

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble names the module qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks
from rclpy.qos import qos_policy_name_from_kind, ReliabilityPolicy

INPUT_PROBLEMS = ('none', 'no_publisher', 'wrong_type', 'incompatible_qos', 'other_transport',
                  'stalled')
# The two camera transports: message type -> the node's `input_transport` value.
TRANSPORTS = {'sensor_msgs/msg/Image': 'raw', 'sensor_msgs/msg/CompressedImage': 'compressed'}
COMPRESSED_SUFFIX = '/compressed'
UNKNOWN_NODE = '_NODE_NAME_UNKNOWN_'  # the graph's name for a node not yet fully discovered
LISTED_TOPICS = 10  # image topics named in one explanation


def type_name(message_type):
    """Return the ROS name of a message class: `sensor_msgs/msg/Image`."""
    return f"{message_type.__module__.split('.')[0]}/msg/{message_type.__name__}"


def node_names(infos):
    """Return the nodes of some endpoints, as `/namespace/name`, for a log line."""
    names = sorted({'a node still being discovered' if info.node_name == UNKNOWN_NODE
                    else f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                    for info in infos})
    return ', '.join(names)


class InputHealth:
    """
    The input problem of one camera subscription: one of `INPUT_PROBLEMS`, with its explanation.

    `topic` is the subscription's topic as given to `create_subscription` (`image`,
    `front/image/compressed`), `message_type` its type, `Image` or `CompressedImage`; the other
    transport's topic follows image_transport's naming (`<base>` and `<base>/compressed`).
    Create the subscription with `event_callbacks=health.event_callbacks()`, call `received()`
    for every message and `check()` about once a second.

    Precedence, first match wins:

    1. `none`: a message arrived in the last `stall_seconds`.
    2. `incompatible_qos`: the subscription's incompatible-QoS event fired (a publisher of the
       right type that DDS will not match, e.g. best effort to this reliable subscription); it
       holds until a message arrives or the publishers of the topic change.
    3. `wrong_type`: the topic has a publisher of another type.
    4. `stalled`: the topic has a publisher of the right type, and nothing arrived for
       `stall_seconds`; a publisher that appears has `stall_seconds` to deliver.
    5. `none` ("waiting") for the first `stall_seconds` after creation, while discovery runs.
    6. `other_transport`: nobody publishes the topic, but the other transport's topic has a
       publisher.
    7. `no_publisher`: nothing on either.

    Each change of problem is logged once: a WARN line with the resolved topic, the cause and the
    fix, and an INFO line when messages arrive again. The two waiting cases (a new publisher's
    first `stall_seconds`, the start) log nothing.
    """

    def __init__(self, node, topic, message_type, stall_seconds=3.0):
        self._node = node
        self._given = topic
        self.topic = node.resolve_topic_name(topic)
        self._type = type_name(message_type)
        self._other_type, = (name for name in TRANSPORTS if name != self._type)
        self._other_given = (topic.removesuffix(COMPRESSED_SUFFIX)
                             if topic.endswith(COMPRESSED_SUFFIX)
                             else topic + COMPRESSED_SUFFIX)
        self._other_topic = node.resolve_topic_name(self._other_given)
        self._stall_seconds = stall_seconds
        self._started = time.monotonic()
        self._last_message = None
        self._publisher_ids = set()
        self._publishers_since = None  # when the newest publisher of the topic appeared
        self._lock = threading.Lock()
        self._incompatible = None  # [policy name, event time, publisher ids seen after it]
        self._reported = 'none'  # the problem last logged

    def event_callbacks(self):
        """Return the subscription's event callbacks: the incompatible-QoS event."""
        return SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def _on_incompatible_qos(self, event):
        # Foxy-era rclpy names it 'RELIABILITY_QOS_POLICY', later ones 'RELIABILITY'.
        policy = qos_policy_name_from_kind(event.last_policy_kind).removesuffix('_QOS_POLICY')
        with self._lock:
            self._incompatible = [policy, time.monotonic(), None]

    def received(self):
        """Note that a message arrived; cheap enough for every message."""
        self._last_message = time.monotonic()

    def check(self):
        """
        Return `(problem, explanation)` now; log the change when the problem changed.

        Queries the ROS graph: call it from a timer, about once a second.
        """
        now = time.monotonic()
        publishers = self._node.get_publishers_info_by_topic(self.topic)
        matching = [info for info in publishers if info.topic_type == self._type]
        ids = {tuple(info.endpoint_gid) for info in matching}
        if ids - self._publisher_ids:
            self._publishers_since = now
        self._publisher_ids = ids
        policy = self._incompatible_policy(now, ids)
        problem, explanation = self._diagnose(now, publishers, matching, policy)
        if problem not in ('none', self._reported):
            self._node.get_logger().warning(f'input problem {problem}: {explanation}')
            self._reported = problem
        elif self._receiving(now) and self._reported != 'none':
            self._node.get_logger().info(
                f'input {self.topic}: messages arrive again (was {self._reported})')
            self._reported = 'none'
        return problem, explanation

    def _receiving(self, now):
        return self._last_message is not None and now - self._last_message < self._stall_seconds

    def _incompatible_policy(self, now, ids):
        """Return the policy of a standing incompatible-QoS event, or None."""
        with self._lock:
            if self._incompatible is None:
                return None
            policy, since, seen = self._incompatible
            if self._last_message is not None and self._last_message > since:
                self._incompatible = None  # a compatible publisher delivers
            elif seen is None:
                # The graph may show the publisher a little after the event, or never if it left
                # at once.
                if ids:
                    self._incompatible[2] = ids
                elif now - since > self._stall_seconds:
                    self._incompatible = None
            elif ids != seen:
                self._incompatible = None  # the publishers changed: look again
            return policy if self._incompatible is not None else None

    def _diagnose(self, now, publishers, matching, policy):
        topic = self.topic
        if self._receiving(now):
            return 'none', f'receiving {topic}'
        if policy is not None:
            return 'incompatible_qos', self._explain_qos(policy, matching)
        wrong = [info for info in publishers if info.topic_type != self._type]
        if wrong:
            return 'wrong_type', self._explain_type(wrong)
        if matching:
            silence = now - max(self._last_message or 0.0, self._publishers_since)
            if silence >= self._stall_seconds:
                return 'stalled', self._explain_stall(matching, silence)
            return 'none', f'waiting for the first message on {topic}'
        if now - self._started < self._stall_seconds:
            return 'none', f'waiting for a publisher of {topic}'
        other = [info for info in self._node.get_publishers_info_by_topic(self._other_topic)
                 if info.topic_type == self._other_type]
        if other:
            return 'other_transport', (
                f'nobody publishes {topic} ({self._type}), but {node_names(other)} publishes '
                f'{self._other_topic}: set input_transport:={TRANSPORTS[self._other_type]}')
        return 'no_publisher', (f'nobody publishes {topic} ({self._type}) nor '
                                f'{self._other_topic}: {self._explain_topics()}')

    def _explain_qos(self, policy, matching):
        text = (f'{node_names(matching) or "a publisher"} publishes {self.topic} with a QoS '
                f'this subscription cannot match ({policy} policy): no messages come through')
        if policy == 'RELIABILITY':
            return text + (': the publisher is best effort and this subscription reliable; set '
                           'qos_reliability:=best_effort, or make the publisher reliable')
        return text + f': make the {policy.lower()} of publisher and subscription compatible'

    def _explain_type(self, wrong):
        types = ', '.join(sorted({info.topic_type for info in wrong}))
        text = f'{node_names(wrong)} publishes {self.topic} as {types}, not {self._type}: '
        if types == self._other_type:
            return text + (f'set input_transport:={TRANSPORTS[self._other_type]} and remap '
                           f'-r {self._other_given}:={self.topic}')
        return text + self._explain_topics()

    def _explain_stall(self, matching, silence):
        text = (f'{node_names(matching)} publishes {self.topic}, but nothing arrived for '
                f'{silence:.1f} s: is the camera paused or stuck?')
        if (self._own_reliability() == ReliabilityPolicy.BEST_EFFORT
                and any(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                        for info in matching)):
            text += (' Or are its images large? Fast DDS with its default transports can lose '
                     'nearly all of them on the way to a best-effort subscription like this one: '
                     'try qos_reliability:=reliable')
        return text

    def _own_reliability(self):
        for info in self._node.get_subscriptions_info_by_topic(self.topic):
            if self._is_own(info) and info.topic_type == self._type:
                return info.qos_profile.reliability
        return None

    def _is_own(self, info):
        return (info.node_name == self._node.get_name()
                and info.node_namespace == self._node.get_namespace())

    def _explain_topics(self):
        """Name the image topics that others publish, and the remap or parameter to use one."""
        topics = []
        for name, types in self._node.get_topic_names_and_types():
            for kind in set(types) & set(TRANSPORTS):
                if any(info.topic_type == kind and not self._is_own(info)
                       for info in self._node.get_publishers_info_by_topic(name)):
                    topics.append((name, kind))
        if not topics:
            return ('no image topic is published at all: is the camera driver running, with the '
                    'same ROS_DOMAIN_ID and discovery range?')
        listed = ', '.join(f'{name} ({kind})' for name, kind in topics[:LISTED_TOPICS])
        if len(topics) > LISTED_TOPICS:
            listed += f' and {len(topics) - LISTED_TOPICS} more'
        same = [name for name, kind in topics if kind == self._type]
        if same:
            return (f'image topics published: {listed}; remap the input, e.g. '
                    f'-r {self._given}:={same[0]}')
        other = next(name for name, kind in topics if kind == self._other_type)
        return (f'image topics published: {listed}; set input_transport:='
                f'{TRANSPORTS[self._other_type]} and remap -r {self._other_given}:={other}')

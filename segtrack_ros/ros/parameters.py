"""The parameter table (`segtrack_ros.params`) as ROS parameters: descriptors and values."""

import array

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def descriptor(spec):
    """Build the ROS parameter descriptor of a `ParameterSpec`: description, range, typing."""
    text = spec.description
    if spec.choices:
        text += f' One of: {", ".join(spec.choices)}.'
    if spec.fixed:
        text += ' Read-only while the node is configured.'
    # Lists are typed dynamically: rclpy types an empty list as a byte array, so a typed list
    # parameter could never be set back to [] (`ParameterSpec.check` keeps the item type).
    result = ParameterDescriptor(description=text, dynamic_typing=isinstance(spec.default, list))
    if spec.low is not None and isinstance(spec.default, float):
        result.floating_point_range = [FloatingPointRange(from_value=spec.low,
                                                          to_value=spec.high)]
    elif spec.low is not None and not isinstance(spec.default, list):
        result.integer_range = [IntegerRange(from_value=spec.low, to_value=spec.high,
                                             step=spec.step or 1)]
    return result


def plain(value):
    """Return a parameter value as the core wants it: lists for arrays, [] for an unset list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, array.array)) else value

"""What `segtrack_node` says on `/diagnostics`: one status per camera, from plain figures."""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def camera_status(name, figures, problems, state, hardware_id):
    """
    Return the `DiagnosticStatus` of one camera.

    `figures` are the pipeline's figures of the camera (they become the key/values);
    `problems` are (what, problem, explanation) in order of importance, e.g. ('input',
    'stalled', '...'), ('depth', 'none', ''). WARN while a problem is not `none` or bad inputs
    or errors happened lately; the message names the first problem, else the processed rate.
    """
    found = [(what, problem, why) for what, problem, why in problems if problem != 'none']
    if found:
        what, problem, why = found[0]
        text = f'{what} problem {problem}: {why}'
    elif figures['recent_problems']:
        text = f"{figures['recent_problems']} bad inputs or errors in the last few seconds"
    elif state != 'active':
        text = state
    else:
        text = f"{figures['processed_hz']:.1f} Hz processed"
    warn = found or figures['recent_problems']
    return DiagnosticStatus(
        name=name, hardware_id=hardware_id,
        level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK, message=text,
        values=[KeyValue(key=key, value=f'{value:.3f}' if isinstance(value, float)
                         else str(value)) for key, value in figures.items()])


def idle_status(name, state):
    """Return the status of a node that has no pipeline (unconfigured)."""
    return DiagnosticStatus(name=name, level=DiagnosticStatus.OK,
                            message=f'{state}: no pipeline',
                            values=[KeyValue(key='state', value=state)])


def diagnostic_array(statuses, stamp):
    """Return a `DiagnosticArray` of `statuses` stamped `stamp`."""
    message = DiagnosticArray(status=statuses)
    message.header.stamp = stamp
    return message

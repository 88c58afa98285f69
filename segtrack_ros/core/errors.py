"""The one error type of the core: a value that cannot be used, named with its fix."""


class SegmenterError(Exception):
    """A model, device or tracker that cannot be used; the message names the value and the fix."""

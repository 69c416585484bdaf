"""The one exception type for mistakes a user can fix (bad config, missing data, bad paths)."""


class GanforgeError(Exception):
    """A user-fixable problem; entry scripts print its message on one line and exit non-zero."""

"""The one exception type users see: its message names the problem and the fix."""


class BcjaxError(Exception):
    """A problem with the user's input; scripts print it on one line and exit non-zero."""

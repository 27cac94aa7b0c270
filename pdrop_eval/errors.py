"""The one exception type users see.

Every error a user can cause (bad flags, missing data or weights, an invalid schedule) is raised as
`PdropEvalError` with a message that says what is wrong and how to fix it; the CLI prints it as one line and
exits non-zero instead of showing a traceback.
"""


class PdropEvalError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class PdropEvalWarning(UserWarning):
    """Something the user should know that does not stop the run (a metadata column missing from a data file);
    the CLI prints it as one `warning:` line."""

"""The exception types users see.

Every error a user can cause (bad flags, missing data or weights, an invalid schedule) is raised as
`PdropEvalError` with a message that says what is wrong and how to fix it; the CLI prints it as one line and
exits non-zero instead of showing a traceback.
"""


class PdropEvalError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class PdropEvalWarning(UserWarning):
    """Something the user should know that does not stop the run (a metadata column missing from a data file);
    the CLI prints it as one `warning:` line."""


class SampleError(PdropEvalError):
    """One sample's input cannot be given to the model (its image is missing, corrupt or too large; its prompt
    holds a literal `<image>`). The runner records that sample as failed and goes on: one odd sample among
    thousands must not end a run. Outside a run (a notebook calling the loaders) it is an ordinary error."""


class RefusedOnEveryRank(PdropEvalError):
    """Raised by every rank of a torchrun together, from a decision rank 0 broadcast (another command holds the run
    folder). Each rank prints its line and then waits for the others before exiting: torchrun ends the remaining
    ranks as soon as one exits, which would cut off a rank that had not printed yet."""

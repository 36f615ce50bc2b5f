"""The one error root: every error sovra raises on purpose is a `SovraError` of one kind.

The kind, not the message, decides what the caller sees: the CLI's exit code (`sovra.cli.kit`)
and the server's HTTP status (`sovra.server.app`). Pick the kind by who must act:

- `Invalid`: the user's mistake (a bad value, file or configuration); they fix their input.
- `NotFound`: the thing does not exist, *or the caller may not see it*. Reads the caller is not
  allowed are NotFound on purpose, so that an error never tells whether something exists.
- `Forbidden`: a refused action the caller may know about (separation of duties, a missing
  scope, an approver outside the approving groups).
- `Conflict`: the request is well-formed but the thing's current state does not allow it
  (a run that is not waiting for an approval, a vote already cast).
- `Unavailable`: a dependency is down or unreachable (a database, a model endpoint, a source),
  or egress is refused at network level; retrying later or fixing the deployment helps.

A package keeps its own error class (`except ConfigError` keeps working) and names its kind as
the *first* kind among its bases: `class UnknownUser(NotFound, DirectoryError)`. Where one
package error covers two kinds, the less common kind is a subclass that keeps the old class as
a base. `kind_of` walks the MRO, so the first kind named wins. Where the MRO cannot put the
wanted kind first (a subclass of an Unavailable error that is the caller's mistake), the class
says so with `kind = Invalid`; the nearest such declaration wins.
"""

from __future__ import annotations

from typing import ClassVar


class SovraError(Exception):
    """Base of every deliberate sovra error; `str(exc)` is one line a user can act on.

    `hint` (optional) is the fix, when the message itself does not already say it.
    """

    kind: ClassVar[type[SovraError] | None] = None
    """Set only where the bases cannot name the kind first (see the module docstring)."""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint

    @property
    def message(self) -> str:
        """The user message, with the hint when there is one."""
        return f"{self}; {self.hint}" if self.hint else str(self)


class Invalid(SovraError):
    """The user's input, file or configuration is wrong; the message names it and the fix."""


class NotFound(SovraError):
    """It does not exist, or the caller may not see it (the two look the same on purpose)."""


class Forbidden(SovraError):
    """The caller may not do this, and may know that; the message says why."""


class Conflict(SovraError):
    """The thing's current state does not allow this request (already decided, not waiting)."""


class Unavailable(SovraError):
    """A dependency is down, unreachable or refused at network level; try again or fix it."""


KINDS: tuple[type[SovraError], ...] = (Invalid, NotFound, Forbidden, Conflict, Unavailable)


def kind_of(exc: SovraError) -> type[SovraError]:
    """The kind of `exc`: the first of KINDS (or `kind` declaration) in its MRO; `SovraError`
    for an error raised without a kind."""
    for cls in type(exc).__mro__:
        if cls in KINDS:
            return cls
        declared = cls.__dict__.get("kind")
        if isinstance(declared, type) and issubclass(declared, SovraError):
            return declared
    return SovraError

"""The one exception tree of the scheduling app."""

from __future__ import annotations


class SchedulingError(Exception):
    """A scheduled job could not be declared, stored or run."""


class InvalidSchedule(SchedulingError, ValueError):
    """A cron expression or interval that cannot be scheduled."""


class InvalidJobDeclaration(SchedulingError, ValueError):
    """`@scheduled` was used in a way that cannot work (bad name, arguments, duplicate)."""


class InvalidScript(SchedulingError, ValueError):
    """A custom script that does not compile, fails to load, or declares no valid job."""

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


class CustomScriptsDisabled(SchedulingError):
    """Custom scripts are switched off on this node (CUSTOM_SCRIPTS_ENABLED=false)."""


class ScriptNotFound(SchedulingError, LookupError):
    """No custom script has that name."""


class ScriptExists(SchedulingError):
    """A custom script with that name exists already (use PUT to change it)."""


class UnknownJob(SchedulingError, LookupError):
    """A job name that neither this process's code nor an enabled custom script declares."""

"""The one error tree. Every expected failure is a ProvisionerError subclass.

The CLI prints `str(err)` as one line and exits with `err.exit_code`; anything else is a bug
and gets a traceback in the debug log.
"""
from __future__ import annotations


class ProvisionerError(Exception):
    """Base of every expected error. `str()` is the one-line message shown to the user."""

    exit_code = 1

    def __init__(self, message: str, **context):
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class ConfigError(ProvisionerError):
    """Bad user input in a config file or option; names the file (and line when known)."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, line: int | None = None, **context):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message, path=path, line=line, **context)
        self.path = path
        self.line = line


class StackError(ConfigError):
    """An invalid stack file (always with file and, where known, line)."""


class CommandError(ProvisionerError):
    """An external command failed: carries argv, where it ran (a host's "user@address:port"; None
    for this machine), exit code and the tail of stderr."""

    def __init__(self, argv, returncode: int, stdout: str = "", stderr: str = "", where: str | None = None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.where = where
        tail = " ".join(stderr.strip().splitlines()[-3:]) if stderr else ""
        msg = f"command failed (exit {returncode}): {' '.join(self.argv)}"
        if where:
            msg = f"ssh {where}: {msg}"
        if tail:
            msg += f": {tail}"
        super().__init__(msg, argv=self.argv, returncode=returncode)


class CommandNotFound(CommandError):
    def __init__(self, argv):
        super().__init__(argv, 127, stderr=f"{argv[0]}: command not found")


class DiskError(ProvisionerError):
    """A disk cannot be used as asked (refused for safety, not found, ...)."""


class ImageError(ProvisionerError):
    """An image reference, manifest or layer is invalid or missing."""


class RegistryError(ProvisionerError):
    """A registry refused or failed a request."""


class ContainerError(ProvisionerError):
    """A container cannot be created, started or found."""


class CloudError(ProvisionerError):
    """A cloud provider refused a request; translated from provider codes in one place."""


class HostError(ProvisionerError):
    """A step of host preparation failed."""

"""User-facing failures: one base class, messages that name the key, file or value."""


class EdgeloopError(Exception):
    """A failure the user can act on; the CLI prints it as one line plus a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(EdgeloopError):
    """params.yaml or a setting is missing, mistyped or out of range."""


class DataContractError(EdgeloopError):
    """A data batch broke the validation suite; it was quarantined."""


class TrainingError(EdgeloopError):
    """Training could not produce a usable model (for example the loss diverged)."""


class PrivacyBudgetError(EdgeloopError):
    """A run would spend more epsilon on a data version than params allow."""


class StageError(EdgeloopError):
    """DVC could not run a pipeline stage (a missing dependency, a failed command)."""


class ServiceError(EdgeloopError):
    """A local service (MLflow, Prefect) could not be started or reached."""


def error_class(name: str) -> type[EdgeloopError]:
    """The EdgeloopError subclass called `name` (a stage reports failures by name)."""
    pending: list[type[EdgeloopError]] = [EdgeloopError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return EdgeloopError


class GateRefused(EdgeloopError):
    """The registry's gates refused the version a run registered."""

"""The one exception type the entrypoint turns into SageMaker's failure file."""


class TrainingError(Exception):
    """A failure the user can act on; its message becomes the training job's FailureReason."""


class DatasetError(TrainingError):
    """The dataset cannot be trained on; the message says what to fix."""

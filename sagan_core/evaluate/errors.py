"""The one error evaluation raises: what cannot be evaluated and what to provide."""


class EvaluationError(RuntimeError):
    """Evaluation cannot run (missing weights, bad inputs); the message says what to provide."""

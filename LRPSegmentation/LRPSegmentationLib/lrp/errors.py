"""What the LRP engine refuses, as exceptions that say what to do."""

class UnsupportedModelError(ValueError):
    """The model does something the engine cannot propagate relevance through (names the layer/operation)."""


class ExplainInputError(ValueError):
    """Bad arguments to :func:`explain` (shapes, tap names, bounds)."""


"""Errors raised by the ``models`` package."""


class ModelError(ValueError):
    """A model could not be built or loaded.

    The message always names the model (built-in name or file) and, for ONNX
    files, the node name and op type where that is relevant.
    """

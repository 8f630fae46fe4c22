"""The deadline-aware anytime server: a Ray Serve application speaking the Open Inference Protocol v2.

``python -m serving`` serves the train stage's members (``outputs/members``) as one EANN (or one ANN) through
the library's :class:`anytime.eann.engine.AnytimeEngine`. Only this package and ``pipelines/`` import Ray.
"""


def __getattr__(name: str):
    """``parse_args`` of ``python -m serving`` (the docs check reads a module's parser), imported on use: the
    protocol module stays importable without Ray."""
    if name == "parse_args":
        from serving.cli import parse_args

        return parse_args
    raise AttributeError(f"module 'serving' has no attribute {name!r}")

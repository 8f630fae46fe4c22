"""The deadline-aware anytime server: a Ray Serve application speaking the Open Inference Protocol v2.

``python -m serving`` serves the train stage's members (``outputs/members``) as one EANN (or one ANN) through
the library's :class:`anytime.eann.engine.AnytimeEngine`. Only this package and ``pipelines/`` import Ray.
"""

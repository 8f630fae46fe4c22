"""The Open Inference Protocol v2 (KServe/Triton REST) as this server speaks it: reading an infer request,
refusing bad ones in one line, and writing the answer's outputs.

Input: one tensor ``images``, datatype ``UINT8``, shape ``[N, C, H, W]`` (the dataset's raw pixels), as JSON
``data`` or in the binary extension (``Inference-Header-Content-Length``, ``binary_data_size``) that
``tritonclient`` sends by default. Request parameters: ``deadline_ms`` (from receipt), ``flops`` (per sample)
and ``confidence`` (leave at the first head whose softmax reaches it). Outputs are JSON, one row per image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anytime.eann.engine import Answer

INPUT = "images"
DATATYPE = "UINT8"
MAX_DEADLINE_MS = 60_000.0  # a deadline beyond a minute is a unit mistake, not a real-time budget
# name, datatype and per-row shape (after N) of every output; logits hold the answered head's raw scores
OUTPUTS: tuple[tuple[str, str], ...] = (
    ("label", "INT64"),
    ("logits", "FP32"),
    ("member", "INT32"),
    ("head", "INT32"),
    ("flops", "FP64"),
    ("queued_ms", "FP64"),
    ("compute_ms", "FP64"),
    ("deadline_met", "BOOL"),
    ("status", "BYTES"),
)


class BadRequest(Exception):
    """A refused request: ``status`` is its HTTP code, the message one line naming what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferRequest:
    """A validated request: ``images`` uint8 ``[N, C, H, W]`` and its limits."""

    id: str | None
    images: np.ndarray
    deadline_ms: float | None
    flops: float | None
    confidence: float | None


def _number(params: dict, key: str, low: float, high: float, *, low_open: bool) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if bad or value > high or (value <= low if low_open else value < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise BadRequest(
            400, f"parameter {key}={value!r} is invalid: must be a finite number {bound} and <= {high:g}"
        )
    return float(value)


def _json_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON part of the body and the binary tail (the binary extension), or a 400."""
    split = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(
                400, f"Inference-Header-Content-Length={header_length!r} is invalid for the body"
            )
        split = int(header_length)
    try:
        request = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest(400, "the body must be a JSON object with 'inputs'")
    return request, body[split:]


def _pixels(tensor: dict, tail: bytes, count: int) -> np.ndarray:
    """The tensor's values as uint8, from its binary data or its JSON ``data``."""
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count or len(tail) != count:
            raise BadRequest(
                400, f"binary_data_size={size!r} is invalid: must be {count} bytes for this shape"
            )
        return np.frombuffer(tail, dtype=np.uint8)
    try:
        values = np.asarray(tensor.get("data"), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BadRequest(400, f"input '{INPUT}' data must be a flat or nested list of numbers") from None
    if values.size != count:
        raise BadRequest(400, f"input '{INPUT}' has {values.size} values: its shape needs {count}")
    if not np.isfinite(values).all():
        raise BadRequest(
            400, f"input '{INPUT}' holds a non-finite value: pixels must be integers in [0, 255]"
        )
    if ((values < 0) | (values > 255) | (values != np.rint(values))).any():
        raise BadRequest(
            400, f"input '{INPUT}' holds a value outside UINT8: pixels must be integers in [0, 255]"
        )
    return values.astype(np.uint8)


def parse_infer(
    body: bytes, header_length: str | None, input_shape: Sequence[int], max_rows: int
) -> InferRequest:
    """Validate an infer request body against the model's ``input_shape`` ``(C, H, W)``, or raise a 400."""
    request, tail = _json_body(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, f"'inputs' must be a list of one tensor named '{INPUT}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise BadRequest(400, f"input name {tensor.get('name')!r} is invalid: must be '{INPUT}'")
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(400, f"input datatype {tensor.get('datatype')!r} is invalid: must be '{DATATYPE}'")
    shape = tensor.get("shape")
    ok = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    if not ok or len(shape) != 4 or list(shape[1:]) != list(input_shape) or not 1 <= shape[0] <= max_rows:
        raise BadRequest(
            400,
            f"input shape {shape!r} is invalid: must be [N, {', '.join(map(str, input_shape))}] "
            f"with 1 <= N <= {max_rows}",
        )
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(400, "'parameters' must be a JSON object")
    request_id = request.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        images=_pixels(tensor, tail, math.prod(shape)).reshape(shape),
        deadline_ms=_number(params, "deadline_ms", 0.0, MAX_DEADLINE_MS, low_open=True),
        flops=_number(params, "flops", 0.0, math.inf, low_open=True),
        confidence=_number(params, "confidence", 0.0, 1.0, low_open=False),
    )


def _row(answer: Answer) -> dict[str, Any]:
    answered = answer.logits is not None
    return {
        "label": int(answer.logits.argmax()) if answered else -1,
        "logits": answer.logits.tolist() if answered else None,
        "member": -1 if answer.member is None else answer.member,
        "head": -1 if answer.head is None else answer.head,
        "flops": answer.flops,
        "queued_ms": answer.queued_s * 1e3,
        "compute_ms": answer.compute_s * 1e3,
        "deadline_met": bool(answer.deadline_met) if answer.deadline_met is not None else answered,
        "status": answer.status.value,
    }


def infer_response(model: str, request_id: str | None, answers: Sequence[Answer], classes: int) -> dict:
    """The v2 response: one output per field of :data:`OUTPUTS`, one row per image."""
    rows = [_row(a) for a in answers]
    for row in rows:
        if row["logits"] is None:
            row["logits"] = [0.0] * classes  # no head ran: status says why
    outputs = []
    for name, datatype in OUTPUTS:
        data = [row[name] for row in rows]
        shape = [len(rows), classes] if name == "logits" else [len(rows)]
        flat = [v for values in data for v in values] if name == "logits" else data
        outputs.append({"name": name, "datatype": datatype, "shape": shape, "data": flat})
    response: dict[str, Any] = {"model_name": model, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    return response

"""Reading Open Inference Protocol v2 requests without a server: each bad request is one 4xx line."""

import json

import numpy as np
import pytest

from serving.protocol import BadRequest, parse_infer

SHAPE = (1, 8, 8)


def body(images=None, **parameters) -> dict:
    images = np.arange(64, dtype=np.uint8).reshape(1, *SHAPE) if images is None else images
    tensor = {
        "name": "images",
        "shape": list(images.shape),
        "datatype": "UINT8",
        "data": images.ravel().tolist(),
    }
    return {"id": "r1", "inputs": [tensor], "parameters": parameters}


def parse(request, header=None) -> object:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    return parse_infer(raw, header, SHAPE, max_rows=4)


def test_a_good_request_gives_its_pixels_and_limits():
    request = parse(body(deadline_ms=12.5, flops=1000, confidence=0.9))
    assert request.images.dtype == np.uint8 and request.images.shape == (1, *SHAPE)
    assert request.images.ravel().tolist() == list(range(64)) and request.id == "r1"
    assert (request.deadline_ms, request.flops, request.confidence) == (12.5, 1000.0, 0.9)
    nested = body()
    nested["inputs"][0]["data"] = np.arange(64).reshape(1, *SHAPE).tolist()  # nested lists are allowed too
    assert parse(nested).images.ravel().tolist() == list(range(64))


def test_the_binary_extension_tritonclient_sends():
    images = np.full((2, *SHAPE), 7, dtype=np.uint8)
    header = body(images)
    del header["inputs"][0]["data"]
    header["inputs"][0]["parameters"] = {"binary_data_size": images.size}
    head = json.dumps(header).encode()
    request = parse(head + images.tobytes(), str(len(head)))
    assert request.images.shape == (2, *SHAPE) and (request.images == 7).all()
    with pytest.raises(BadRequest, match="binary_data_size=128 is invalid: must be 128 bytes"):
        parse(head + images.tobytes()[:-1], str(len(head)))


def _with(**change) -> dict:
    request = body()
    request["inputs"][0].update(change.pop("tensor", {}))
    request.update(change)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            _with(tensor={"shape": [1, 1, 8, 9]}),
            "input shape [1, 1, 8, 9] is invalid: must be [N, 1, 8, 8] with 1",
        ),
        (_with(tensor={"shape": [5, 1, 8, 8]}), "input shape [5, 1, 8, 8] is invalid"),
        (_with(tensor={"datatype": "FP32"}), "input datatype 'FP32' is invalid: must be 'UINT8'"),
        (_with(tensor={"name": "x"}), "input name 'x' is invalid: must be 'images'"),
        (_with(tensor={"data": [1.0] * 63}), "input 'images' has 63 values: its shape needs 64"),
        (_with(tensor={"data": [float("nan")] * 64}), "input 'images' holds a non-finite value"),
        (_with(tensor={"data": [256] * 64}), "input 'images' holds a value outside UINT8"),
        (_with(tensor={"data": [0.5] * 64}), "input 'images' holds a value outside UINT8"),
        (_with(tensor={"data": ["a"] * 64}), "input 'images' data must be a flat or nested list of numbers"),
        (
            _with(parameters={"deadline_ms": 0}),
            "parameter deadline_ms=0 is invalid: must be a finite number > 0",
        ),
        (_with(parameters={"deadline_ms": -3}), "parameter deadline_ms=-3 is invalid"),
        (_with(parameters={"deadline_ms": 1e9}), "parameter deadline_ms=1000000000.0 is invalid"),
        (_with(parameters={"deadline_ms": float("inf")}), "parameter deadline_ms=inf is invalid"),
        (_with(parameters={"deadline_ms": "10"}), "parameter deadline_ms='10' is invalid"),
        (_with(parameters={"flops": -1}), "parameter flops=-1 is invalid"),
        (_with(parameters={"confidence": 2}), "parameter confidence=2 is invalid"),
        (_with(inputs=[]), "'inputs' must be a list of one tensor named 'images'"),
        (b'{"inputs": [', "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object with 'inputs'"),
    ],
)
def test_bad_requests_are_one_line_400s(request_, message):
    with pytest.raises(BadRequest) as info:
        parse(request_)
    assert info.value.status == 400 and message in str(info.value) and "\n" not in str(info.value)

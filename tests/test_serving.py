"""The server for real: ``python -m serving`` on a private Ray cluster on 127.0.0.1, tiny members trained on
digits, plain HTTP and ``tritonclient`` requests, concurrent ones included; SIGTERM ends it.

One module-scoped server. Its limits are set small (queue, batch, body) so that shedding and oversized bodies
are reached with a few requests.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from anytime.eann.engine import AnytimeEngine
from anytime.record import load_network, read_record
from bench.bench_serving import infer_body
from bench.digits_members import digits_splits, train_members
from bench.server_process import running_server

pytestmark = pytest.mark.heavy

NAME = "digits"
SLACK_MS = 100.0  # stated slack for the deadline bound: HTTP, event loop and a loaded machine's scheduling
MAX_QUEUE, MAX_BATCH, MAX_BODY = 16, 8, 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("outputs")
    members = train_members(outputs, depths=(1, 2), epochs=6)
    limits = ["--max-queue", str(MAX_QUEUE), "--max-batch", str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY)]
    with running_server(outputs, NAME, [*limits, "--max-wait-ms", "50"]) as (base, port):
        yield {"url": f"{base}/v2/models/{NAME}", "base": base, "members": members, "port": port}
    with pytest.raises(OSError):  # ended cleanly (exit 130, checked on exit), and nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _call(url: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except json.JSONDecodeError:  # Serve's own 503 when its capped queue is full: plain text
            assert error.code == 503, text
            return error.code, {"error": text.strip()}


def _outputs(response: dict) -> dict:
    return {o["name"]: o["data"] for o in response["outputs"]}


@pytest.fixture(scope="module")
def test_images():
    splits = digits_splits()
    return splits.images["test"], splits.labels["test"]


def test_health_and_metadata(server):
    assert _call(server["base"] + "/v2/health/ready") == (200, {"ready": True})
    status, meta = _call(server["url"])
    assert status == 200 and meta["name"] == NAME
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    records = [read_record(server["members"] / m) for m in ("m0", "m1")]
    members = meta["parameters"]["members"]
    assert [m["name"] for m in members] == ["m0", "m1"]
    assert [m["val_error"] for m in members] == [r.val_error for r in records]
    steps = meta["parameters"]["steps"]
    assert [(s["member"], s["head"]) for s in steps] == [(0, k) for k in range(3)] + [
        (1, k) for k in range(6)
    ]
    assert all(s["latency_ms"]["1"] > 0 for s in steps) and steps[-1]["flops"] > steps[2]["flops"]


def test_full_depth_answers_are_the_served_networks_own(server, test_images):
    images, _ = test_images
    status, response = _call(server["url"] + "/infer", infer_body(images[:5]))
    assert status == 200
    out = _outputs(response)
    assert out["status"] == ["complete"] * 5 and out["member"] == [1] * 5 and out["head"] == [5] * 5
    record = read_record(server["members"] / "m1")
    network = load_network(server["members"] / "m1")
    with torch.no_grad():
        expected = network(record.normalise(torch.from_numpy(images[:5])))[-1].argmax(1).tolist()
    assert out["label"] == expected  # the server normalised from the record as training did


def test_concurrent_deadlines_are_met_within_one_head(server, test_images):
    images, _ = test_images
    _, meta = _call(server["url"])
    head_ms = _longest_head_ms(meta["parameters"]["steps"])
    deadlines = np.random.default_rng(0).uniform(10.0, 200.0, size=40)

    def one(i: int) -> tuple[int, dict, float]:
        status, response = _call(
            server["url"] + "/infer", infer_body(images[i : i + 1], deadline_ms=deadlines[i])
        )
        return status, response, deadlines[i]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(deadlines))))
    for status, response, deadline in results:
        assert status in (200, 503, 504), response
        if status == 200:
            out = _outputs(response)
            assert out["status"][0] in ("deadline", "complete", "expired")
            spent = out["queued_ms"][0] + out["compute_ms"][0]
            assert spent <= deadline + head_ms + SLACK_MS
        elif status == 504:
            assert response["status"] in ("unreachable", "expired")
    answered = [_outputs(r)["status"][0] for status, r, _ in results if status == 200]
    assert {"deadline", "complete"} & set(answered)  # not all shed: the bound was checked on real answers


def _longest_head_ms(steps: list[dict]) -> float:
    """One head's calibrated time, the longest at any batch size: the bound's "one head"."""
    pairs = zip([None, *steps], steps, strict=False)
    return max(
        b["latency_ms"][n] - (a["latency_ms"][n] if a else 0.0) for a, b in pairs for n in b["latency_ms"]
    )


def test_a_deadline_no_head_fits_is_answered_at_once(server, test_images):
    status, response = _call(server["url"] + "/infer", infer_body(test_images[0][:1], deadline_ms=1e-4))
    assert status == 504 and response["status"] == "unreachable"
    assert "deadline_ms=0.0001 cannot fit the first head" in response["error"]


def test_a_burst_is_answered_or_refused_and_the_counts_add_up(server, test_images):
    images, _ = test_images
    burst = 40

    def one(i: int) -> int:
        status, response = _call(server["url"] + "/infer", infer_body(images[i * 8 : i * 8 + 8]))
        if status == 503:
            assert "\n" not in response["error"]
        return status

    with ThreadPoolExecutor(burst) as pool:
        statuses = list(pool.map(one, range(burst)))
    answered, refused = statuses.count(200), statuses.count(503)
    assert answered + refused == burst and answered >= 1 and refused >= 1
    assert _call(server["url"] + "/infer", infer_body(images[:1]))[0] == 200  # served again after the burst


def _bad_bodies(images: np.ndarray) -> dict[str, tuple[int, bytes, str]]:
    good = infer_body(images[:1])

    def with_(**change) -> bytes:
        body = json.loads(json.dumps(good))
        body["inputs"][0].update(change.pop("tensor", {}))
        body.update(change)
        return json.dumps(body).encode()

    return {
        "shape": (400, with_(tensor={"shape": [1, 1, 8, 9]}), "input shape [1, 1, 8, 9] is invalid"),
        "datatype": (400, with_(tensor={"datatype": "FP32"}), "input datatype 'FP32' is invalid"),
        "non-finite": (400, with_(tensor={"data": [float("nan")] * 64}), "non-finite value"),
        "negative deadline": (400, with_(parameters={"deadline_ms": -5}), "deadline_ms=-5 is invalid"),
        "zero deadline": (400, with_(parameters={"deadline_ms": 0}), "deadline_ms=0 is invalid"),
        "absurd deadline": (
            400,
            with_(parameters={"deadline_ms": 1e12}),
            "deadline_ms=1000000000000.0 is invalid",
        ),
        "malformed": (400, b'{"inputs": [', "the body is not valid JSON"),
        "oversized": (413, b" " * (MAX_BODY + 1), f"at most {MAX_BODY} are accepted"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "shape",
        "datatype",
        "non-finite",
        "negative deadline",
        "zero deadline",
        "absurd deadline",
        "malformed",
        "oversized",
    ],
)
def test_bad_input_is_one_line_and_the_next_request_is_served(server, test_images, case):
    code, body, message = _bad_bodies(test_images[0])[case]
    status, response = _call(server["url"] + "/infer", body, {"Content-Type": "application/json"})
    assert status == code and message in response["error"] and "\n" not in response["error"]
    assert _call(server["url"] + "/infer", infer_body(test_images[0][:1]))[0] == 200


def test_an_unknown_model_is_404(server, test_images):
    status, response = _call(server["base"] + "/v2/models/nope/infer", infer_body(test_images[0][:1]))
    assert status == 404 and response["error"] == f"model 'nope' is unknown: this server serves '{NAME}'"


def test_tritonclient_reads_metadata_and_infers(server, test_images):
    import tritonclient.http as triton

    images, _ = test_images
    client = triton.InferenceServerClient(f"127.0.0.1:{server['port']}")
    assert client.is_server_ready() and client.is_model_ready(NAME)
    assert client.get_model_metadata(NAME)["inputs"][0]["name"] == "images"
    tensor = triton.InferInput("images", [4, 1, 8, 8], "UINT8")
    tensor.set_data_from_numpy(images[:4])  # the binary extension, tritonclient's default
    result = client.infer(NAME, [tensor], parameters={"deadline_ms": 1000.0})
    assert result.as_numpy("label").shape == (4,) and result.as_numpy("logits").shape == (4, 10)
    assert set(result.as_numpy("status").astype(str)) <= {"complete", "deadline"}
    budget = client.infer(
        NAME, [tensor], parameters={"flops": _call(server["url"])[1]["parameters"]["steps"][1]["flops"]}
    )
    assert list(budget.as_numpy("head")) == [1] * 4 and list(budget.as_numpy("member")) == [0] * 4


def test_engine_and_server_agree_on_the_eann_choice(server, test_images):
    """The same budget gives the same member and head through HTTP as through the library's engine."""
    images, _ = test_images
    dirs = [server["members"] / m for m in ("m0", "m1")]
    records = [read_record(d) for d in dirs]
    engine = AnytimeEngine(
        [load_network(d) for d in dirs],
        (1, 8, 8),
        val_errors=[r.val_error for r in records],
        calibration_repeats=1,
    )
    for step in engine.steps[3:6]:
        (local,) = engine.run(records[0].normalise(torch.from_numpy(images[:1])), flops=step.flops)
        status, response = _call(server["url"] + "/infer", infer_body(images[:1], flops=step.flops))
        out = _outputs(response)
        assert status == 200 and (out["member"][0], out["head"][0]) == (local.member, local.head)

"""The Ray Serve application: a FastAPI ingress speaking the Open Inference Protocol v2 over one engine per
replica.

Why FastAPI on Serve rather than KServe's model server (docs/DESIGN.md, "Serving"): the engine needs to own
batching (deadline-aware, requests leaving mid-batch), which KServe's server would wrap in its own batcher and
handler stack; the v2 REST surface we need is four routes; and Serve already gives replicas, autoscaling and
multi-node placement on the Ray cluster the pipeline runs on, without a second serving stack (kserve pulls
its own pinned FastAPI/uvicorn/protobuf stack beside Ray's).

Every request is answered: a 200 with a status per image, a 4xx naming what was wrong, 503 when the queue is
full (nothing is queued without limit: Serve's own queue is capped too), or 504 when no image's deadline can
fit the first head (``status`` in the body says whether on arrival, ``unreachable``, or in the queue,
``expired``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

from anytime.eann.engine import EngineFull
from pipelines.paths import MEMBERS_DIR
from serving.model import ServedModel, member_dirs
from serving.protocol import BadRequest, infer_response, parse_infer


class ServerSettings(BaseModel, frozen=True):
    """The server's limits and batching (one home: the CLI, Serve's config and the tests read these)."""

    max_batch: int = Field(32, ge=1, description="requests per engine batch")
    max_queue: int = Field(256, ge=1, description="images waiting per replica; more are refused with 503")
    max_wait_ms: float = Field(2.0, ge=0, description="longest a batch waits for more requests")
    max_rows: int = Field(64, ge=1, description="images per infer request")
    max_body_bytes: int = Field(8 << 20, ge=1024, description="largest request body")
    replicas: int = Field(1, ge=1, description="Serve replicas (or autoscaling_config in a Serve config)")


app = FastAPI(title="anytime", docs_url=None, redoc_url=None)


def _error(code: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=code)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it when its length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body has {declared} bytes: at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"the body exceeds {limit} bytes")
    return bytes(body)


def v2_app(model: ServedModel, settings: ServerSettings) -> FastAPI:
    """The v2 REST routes over ``model``'s engine (built in the replica: nothing to pickle)."""
    app = FastAPI(title="anytime", docs_url=None, redoc_url=None, openapi_url=None)
    engine = model.engine

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, str(exc))

    def check_name(name: str) -> None:
        if name != model.name:
            raise BadRequest(404, f"model {name!r} is unknown: this server serves '{model.name}'")

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict:
        check_name(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> dict:
        check_name(name)
        return model.metadata()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> JSONResponse:
        received = engine.now()  # deadline_ms counts from here: the replica has the request's headers
        check_name(name)
        body = await _read_body(request, settings.max_body_bytes)
        length = request.headers.get("inference-header-content-length")
        parsed = parse_infer(body, length, model.input_shape, settings.max_rows)
        first = engine.steps[0].flops
        if parsed.flops is not None and parsed.flops < first:
            raise BadRequest(
                400, f"parameter flops={parsed.flops:g} is invalid: the first head costs {first:g}"
            )
        images = model.normalise(torch.from_numpy(parsed.images.copy()))
        if engine.queued() + len(images) > engine.max_queue:
            return _error(503, f"the queue is full ({engine.max_queue} images waiting): retry later")
        deadline_s = None if parsed.deadline_ms is None else parsed.deadline_ms / 1e3
        limits = {"deadline_s": deadline_s, "flops": parsed.flops, "confidence": parsed.confidence}
        try:
            futures = [engine.submit(x, received=received, **limits) for x in images]
        except EngineFull as exc:
            return _error(503, f"{exc}: retry later")
        answers = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        if all(a.logits is None for a in answers):
            status = answers[0].status.value
            first_ms = engine.latency(0, 1) * 1e3
            message = (
                f"deadline_ms={parsed.deadline_ms:g} cannot fit the first head (about {first_ms:.3g} ms)"
            )
            return _error(504, f"{message}: {status}", status=status)
        return JSONResponse(infer_response(model.name, parsed.id, answers, model.classes))

    return app


@serve.deployment(name="anytime", ray_actor_options={"num_cpus": 1})
@serve.ingress()
class AnytimeServer:
    """One replica: the served model, its engine's worker thread, the v2 routes."""

    def __init__(self, name: str, directories: Sequence[str], settings: ServerSettings) -> None:
        torch.set_grad_enabled(False)
        self.settings = settings
        self.model = ServedModel.load(
            name,
            directories,
            max_batch=settings.max_batch,
            max_queue=settings.max_queue,
            max_wait_s=settings.max_wait_ms / 1e3,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return v2_app(self.model, self.settings)


def build(args: dict) -> serve.Application:
    """Serve's application builder (``serve run serving.app:build outputs=... name=...``, RayService configs):
    ``outputs`` (default ``outputs``), ``name`` (``anytime``), ``members`` (comma-separated run names; default
    all) and any :class:`ServerSettings` key."""
    args = dict(args)
    outputs = args.pop("outputs", "outputs")
    name = args.pop("name", "anytime")
    members = [m for m in str(args.pop("members", "") or "").split(",") if m]
    settings = ServerSettings(**args)
    directories = [str(d) for d in member_dirs(Path(outputs) / MEMBERS_DIR.name, members)]
    # Requests go straight into the replica, where the engine's queue sheds by deadline; Serve's own queue in
    # front of it (where the deadline clock has not started) is kept short, past it Serve answers 503.
    max_ongoing = settings.max_queue + settings.max_batch
    return AnytimeServer.options(
        num_replicas=settings.replicas,
        max_ongoing_requests=max_ongoing,
        max_queued_requests=settings.max_batch,
    ).bind(name, directories, settings)

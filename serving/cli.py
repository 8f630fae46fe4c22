"""``python -m serving``: serve the train stage's members over HTTP until Ctrl-C or SIGTERM.

Without ``--address`` (or ``$RAY_ADDRESS``) it starts a private Ray cluster on 127.0.0.1, as the stages do
(:func:`pipelines.ray_cluster.connect`); with one it joins that cluster and, on exit, removes only its own
application. Bad input (no members, a bad record, a bad flag) is one line and exit code 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from ray import serve

from pipelines import ray_cluster
from pipelines.cli import run
from serving.app import ServerSettings, build


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--outputs", default="outputs", help="the pipeline's outputs folder (default outputs)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--name", default="anytime", help="the model's name in the URLs (default anytime)")
    parser.add_argument(
        "--address", default=None, help="join this running Ray cluster instead of a private one"
    )
    parser.add_argument("--members", default="", help="comma-separated members to serve (default: all)")
    for key, field in ServerSettings.model_fields.items():
        flag = "--" + key.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default, help=field.description)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def serve_forever() -> None:
        settings = {k: getattr(args, k) for k in ServerSettings.model_fields}
        # build reads every member's record: bad input is one line here, before Ray starts
        application = build({"outputs": args.outputs, "name": args.name, "members": args.members, **settings})
        ray_cluster.connect(args.address)
        signal.signal(signal.SIGTERM, ray_cluster._raise_keyboard_interrupt)
        try:
            serve.start(http_options={"host": args.host, "port": args.port})
            serve.run(application, name=args.name, route_prefix="/", blocking=False)
            print(f"serving {args.name} at http://{args.host}:{args.port}/v2/models/{args.name}", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            if args.address or os.environ.get("RAY_ADDRESS"):
                serve.delete(args.name, _blocking=False)  # a shared cluster: remove only our application
            # a private cluster goes with Serve in it (Ctrl-C reaches its processes too)
            ray_cluster.interrupted("the server stopped")

    run(serve_forever)

"""Command line: ``python -m imgapi serve|upscale|stylize``.

    python -m imgapi serve [--host 127.0.0.1] [--port 8000]
    python -m imgapi upscale IN... -o OUT_DIR [--model srgan|srresnet] [--scale 2|3|4]
    python -m imgapi stylize IN... --style NAME -o OUT_DIR [--strength 1.0] [--preserve-color]

Batches use the same decoder, engine and model store as the API, one image at a time.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from imgapi.config import Config
from imgapi.errors import ApiError


def serve(args, config):
    from waitress import serve as waitress_serve

    from imgapi.app import create_app
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(config)
    _json_server_errors(config)
    host, port = args.host or config.host, args.port or config.port
    print(f"serving on http://{host}:{port}/ (weights: {config.model_bucket or config.weights_dir})", flush=True)
    # Threads wait for the bounded inference slots, so a burst queues briefly and then gets 503s.
    # Two threads more than can run or wait for inference stay free for /health, the page and errors.
    threads = max(args.threads, config.max_concurrent + config.max_queue + 2)
    # Bodies up to DRAIN_LIMIT_BYTES over the limit are read, so that the app's JSON 413 reaches clients
    # that send the whole body before reading (imgapi/hooks.py); waitress refuses longer ones itself.
    from imgapi.app import DRAIN_LIMIT_BYTES
    waitress_serve(app, host=host, port=port, threads=threads, channel_timeout=60,
                   max_request_body_size=config.max_body_bytes + DRAIN_LIMIT_BYTES, ident="imgapi")


def _json_server_errors(config):
    """Waitress answers some requests itself, before the app sees them (a Content-Length over its
    body limit, a malformed request): give those the API's JSON error shape too, not text/plain."""
    import json

    from waitress import utilities

    def to_response(self, ident=None):
        if self.code == 413:
            code = "upload_too_large"
            message = (f"the request body is over the limit of {config.max_body_bytes} bytes "
                       f"(at most {config.max_upload_bytes} bytes a file)")
        else:
            code, message = self.reason.lower().replace(" ", "_"), f"{self.reason}: {self.body}"
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json"),
                                              ("X-Content-Type-Options", "nosniff")], body

    utilities.Error.to_response = to_response


def batch(args, config):
    import torch

    from imgapi import engine, images
    from imgapi import stylize as style_engine
    from imgapi.store import ModelStore
    torch.set_num_threads(config.torch_threads)
    store = ModelStore(config)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "upscale":
        name, max_pixels = args.model, config.max_upscale_pixels
        suffix = f"_x{args.scale}_{args.model}"
    else:
        name, max_pixels = f"style/{args.style}", config.max_stylize_pixels
        suffix = f"_{args.style}"
        if store.entry(name) is None:
            styles = [n.split("/", 1)[1] for n in store.names("style")]
            raise SystemExit(f"unknown style {args.style!r}. Styles: {', '.join(styles)}")
    try:
        model = store.get(name)
    except KeyError:
        where = config.model_bucket or config.weights_dir
        raise SystemExit(f"{name} is not in the weights manifest of {where}; deploy its weights and retry.") from None
    failed = 0
    for path in args.inputs:
        t0 = time.perf_counter()
        try:
            rgb, alpha = images.decode(Path(path).read_bytes(), max_pixels)
            if args.command == "upscale":
                out, alpha = engine.upscale(model.module, rgb, alpha, scale=args.scale,
                                            tile=config.tile, overlap=config.tile_overlap)
            else:  # the call the /stylize route makes
                out, alpha = style_engine.stylize_with_alpha(model.module, rgb, alpha, strength=args.strength,
                                                             preserve_color=args.preserve_color,
                                                             max_side=args.max_side)
        except (ApiError, OSError) as exc:
            failed += 1
            print(f"{path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            continue
        dest = out_dir / f"{Path(path).stem}{suffix}.png"
        dest.write_bytes(images.encode_png(out, alpha))
        print(f"{path} -> {dest} ({out.width}x{out.height}, {time.perf_counter() - t0:.1f} s)")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m imgapi", description="Image API: serve it or run it on files.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP API and the web page (waitress)")
    s.add_argument("--host", help="default: $HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default: $PORT or 8000")
    s.add_argument("--threads", type=int, default=8, help="HTTP worker threads (default 8)")
    u = sub.add_parser("upscale", help="super-resolve images into OUT_DIR")
    u.add_argument("inputs", nargs="+", metavar="IN")
    u.add_argument("-o", "--out", required=True, metavar="OUT_DIR")
    u.add_argument("--model", choices=("srgan", "srresnet"), default="srgan")
    u.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    st = sub.add_parser("stylize", help="restyle images into OUT_DIR")
    st.add_argument("inputs", nargs="+", metavar="IN")
    st.add_argument("-o", "--out", required=True, metavar="OUT_DIR")
    st.add_argument("--style", required=True)
    st.add_argument("--strength", type=float, default=1.0)
    st.add_argument("--preserve-color", action="store_true")
    st.add_argument("--max-side", type=int, default=1024)
    args = p.parse_args(argv)
    config = Config.from_env()
    if args.command == "serve":
        return serve(args, config)
    if args.command == "stylize" and not 0.0 <= args.strength <= 1.0:
        p.error("--strength must be from 0 to 1")
    return batch(args, config)


if __name__ == "__main__":
    sys.exit(main())

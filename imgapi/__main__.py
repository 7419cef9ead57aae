"""Command line: ``python -m imgapi serve|upscale|stylize``.

    python -m imgapi serve [--host 127.0.0.1] [--port 8000]
    python -m imgapi upscale IN... -o OUT [--model srgan|srresnet|real] [--scale 2|3|4] [--denoise auto|0..1]
    python -m imgapi stylize IN... (--style NAME | --style-image PAINTING) -o OUT [--strength 1.0]
                             [--preserve-color] [--max-side 1024]

Batches use the same decoder, engine and model store as the API, one image at a time. ``--style`` is a
trained network or a preset (manifest kinds ``style`` and ``preset``); ``--style-image`` is any painting,
decoded with the photo's pixel limit and errors and reduced once, through the same
:class:`imgapi.styles.UniversalStyles` as ``POST /stylize``. ``OUT`` is a folder (``photo_<style>.png``,
``photo_<painting>.png``, ``photo_x4_srgan.png`` in it) or, with one input, a ``.png`` file. Docs:
docs/cli.md.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from imgapi.config import DEFAULT_SR_MODEL, DENOISE_MODELS, SR_MODELS, Config
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

    from imgapi import images
    from imgapi.store import ModelStore
    torch.set_num_threads(config.torch_threads)
    store = ModelStore(config)
    if args.command == "upscale":
        work, suffix = _upscaler(args, config, store)
        max_pixels, arrays = config.max_upscale_pixels, False
    else:  # as the /stylize route decodes: arrays, the stylize pixel limit
        work, suffix = _stylizer(args, config, store)
        max_pixels, arrays = config.max_stylize_pixels, True
    failed = 0
    for path in args.inputs:
        t0 = time.perf_counter()
        try:
            data = Path(path).read_bytes()
            rgb, alpha = images.decode(data, max_pixels, arrays=arrays)
            out, alpha, note = work(data, rgb, alpha)
        except (ApiError, OSError) as exc:
            failed += 1
            print(f"{path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            continue
        dest = _destination(args, path, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(images.encode_png(out, alpha))
        width, height = images.size_of(out)
        print(f"{path} -> {dest} ({width}x{height}, {time.perf_counter() - t0:.1f} s{note})")
    return 1 if failed else 0


def _destination(args, path, suffix):
    """``-o``: a folder (``<stem><suffix>.png`` in it), or with one input a ``.png`` file name."""
    out = Path(args.out)
    if out.suffix.lower() == ".png" and len(args.inputs) == 1:
        return out
    return out / f"{Path(path).stem}{suffix}.png"


def _network(store, name, config):
    try:
        return store.get(name)
    except KeyError:
        where = config.model_bucket or config.weights_dir
        raise SystemExit(f"{name} is not in the weights manifest of {where}; deploy its weights and retry.") from None
    except ApiError as exc:  # a file that cannot be fetched or loaded now
        raise SystemExit(f"{name}: {exc.message}") from None


def _upscaler(args, config, store):
    """``(work(data, rgb, alpha) -> (out, alpha, note), file name suffix)``: the calls the /upscale route makes.
    A model conditioned on the damage level (``real``) runs at ``--denoise``, or at the level measured from
    the file's bytes and pixels as the route measures it; ``note`` says which."""
    from imgapi import engine, images
    model = _network(store, args.model, config)
    denoise = None if args.denoise in (None, "auto") else args.denoise

    def work(data, rgb, alpha):
        level, note = None, ""
        if model.conditioned:
            level, quality = images.damage_level(data, rgb, denoise)
            note = (f", denoise {level:.3f} {'auto' if denoise is None else 'as asked'}, JPEG quality "
                    f"{'none' if quality is None else quality}")
        out, alpha = engine.upscale(model.module, rgb, alpha, scale=args.scale, tile=config.tile,
                                    overlap=config.tile_overlap, level=level)
        return out, alpha, note
    return work, f"_x{args.scale}_{args.model}"


def _stylizer(args, config, store):
    """``(work(data, rgb, alpha) -> (out, alpha, ""), file name suffix)``: the calls the /stylize route makes, with a
    trained network (kind ``style``), a preset (kind ``preset``) or any painting (``--style-image``) through
    the same :class:`imgapi.styles.UniversalStyles` as the server. Bad style or painting: SystemExit."""
    from imgapi import stylize as style_engine
    from imgapi.styles import UniversalStyles
    options = dict(strength=args.strength, preserve_color=args.preserve_color, max_side=args.max_side)
    if args.style is not None:
        kind = (store.entry(f"style/{args.style}") or {}).get("kind")
        if kind not in ("style", "preset"):
            styles = [n.split("/", 1)[1] for n in store.names() if n.startswith("style/")
                      and store.entry(n).get("kind") in ("style", "preset")]
            raise SystemExit(f"unknown style {args.style!r}. Styles: {', '.join(styles)}")
        if kind == "style":
            model = _network(store, f"style/{args.style}", config)
            return (lambda data, rgb, alpha: (*style_engine.stylize_with_alpha(model.module, rgb, alpha, **options),
                                              ""), f"_{args.style}")
    universal = UniversalStyles(store)
    try:
        if args.style is not None:
            stats, _ = universal.preset(args.style)
            suffix = f"_{args.style}"
        else:
            stats, _ = universal.painting(_painting_bytes(args.style_image), config)
            suffix = f"_{Path(args.style_image).stem}"
        universal.load()
        stats()  # the painting reduced (or the preset read) once, before any photo
    except ApiError as exc:
        where = args.style_image if args.style is None else f"style {args.style}"
        raise SystemExit(f"{where}: {exc.message}") from None
    return (lambda data, rgb, alpha: (*universal.stylize(rgb, alpha, stats, **options), "")), suffix


def _painting_bytes(path):
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"{path}: the painting could not be read ({exc.strerror or exc})") from None


OUT_HELP = "a folder for the results, or with one input a .png file name"


def _denoise(text):
    """``--denoise``: ``auto`` or a number from 0 to 1 (the route's ``denoise``)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: give auto or a number from 0 to 1")
    return value


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m imgapi", description="Image API: serve it or run it on files.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP API and the web page (waitress)")
    s.add_argument("--host", help="default: $HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default: $PORT or 8000")
    s.add_argument("--threads", type=int, default=8, help="HTTP worker threads (default 8)")
    u = sub.add_parser("upscale", help="super-resolve images into OUT")
    u.add_argument("inputs", nargs="+", metavar="IN")
    u.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP)
    u.add_argument("--model", choices=SR_MODELS, default=DEFAULT_SR_MODEL,
                   help=f"real: photos with JPEG artefacts or noise; srgan: clean images, sharpest; srresnet: "
                        f"clean images, faithful and smooth (default {DEFAULT_SR_MODEL})")
    u.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    u.add_argument("--denoise", type=_denoise, metavar="auto|0..1",
                   help="model real only: how hard to clean up, 0 (not at all) to 1; default auto, measured "
                        "from each file (its JPEG quality and noise)")
    st = sub.add_parser("stylize", help="restyle images with a named style or any painting into OUT")
    st.add_argument("inputs", nargs="+", metavar="IN")
    st.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP)
    st.add_argument("--style", metavar="NAME", help="a named style: a trained network or a preset (GET /styles)")
    st.add_argument("--style-image", metavar="PAINTING",
                    help="any painting (an image file) as the style, through the universal model")
    st.add_argument("--strength", type=float, default=1.0)
    st.add_argument("--preserve-color", action="store_true")
    st.add_argument("--max-side", type=int, default=1024)
    args = p.parse_args(argv)
    config = Config.from_env()
    if args.command == "serve":
        return serve(args, config)
    if args.command == "stylize" and (args.style is None) == (args.style_image is None):
        given = "both were given" if args.style is not None else "neither was given"
        st.error(f"give exactly one of --style NAME (a named style) and --style-image PAINTING (any painting); "
                 f"{given}")
    if args.command == "upscale" and args.denoise is not None and args.model not in DENOISE_MODELS:
        u.error(f"--denoise applies to --model {' and '.join(DENOISE_MODELS)} only, not {args.model}")
    if args.command == "stylize" and not 0.0 <= args.strength <= 1.0:
        st.error("--strength must be from 0 to 1")
    if len(args.inputs) > 1 and Path(args.out).suffix.lower() == ".png":
        sub.choices[args.command].error(f"-o {args.out} names one file, but {len(args.inputs)} inputs were given: "
                                        "give a folder")
    return batch(args, config)


if __name__ == "__main__":
    sys.exit(main())

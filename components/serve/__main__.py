"""``python -m components.serve``: the serving image's entrypoint (as `twinflow serve`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from components.errors import TwinflowError
from components.serve.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS,
    MAX_REQUEST_BYTES_ENV,
    MAX_REQUEST_BYTES_FLAG,
    MAX_ROWS_ENV,
    MAX_ROWS_FLAG,
    env_int,
)
from components.serve.server import DEFAULT_HOST, DEFAULT_PORT, ServeOptions, serve


def build_parser() -> argparse.ArgumentParser:
    """The entrypoint's flags; the InferenceService's container args must parse with it."""
    parser = argparse.ArgumentParser(prog="python -m components.serve", allow_abbrev=False,
                                     description="Serve an exports directory with KServe.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-dir", type=Path, default=None,
                        help="exports directory (export.json); env MODEL_DIR")
    source.add_argument("--model", default=None,
                        help="registered NAME[@alias] or NAME/VERSION; env MODEL (wins over "
                             "MODEL_DIR, which the image sets to /mnt/models)")
    parser.add_argument("--export", default=None,
                        help="entry of export.json (default: the raw-input entry if any, "
                             "else the preferred one)")
    parser.add_argument("--name", default=None, help="model name in the URL paths")
    parser.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(MAX_REQUEST_BYTES_FLAG, type=int, default=None,
                        help="largest request body in bytes; larger ones get 413 (default "
                             f"{DEFAULT_MAX_REQUEST_BYTES}); env {MAX_REQUEST_BYTES_ENV}")
    parser.add_argument(MAX_ROWS_FLAG, type=int, default=None,
                        help="most rows per request; more get 413 (default "
                             f"{DEFAULT_MAX_ROWS}); env {MAX_ROWS_ENV}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; 1 with a one-line message on bad input."""
    args = build_parser().parse_args(argv)
    if args.model_dir is None and args.model is None:
        args.model = os.environ.get("MODEL") or None
        if args.model is None and os.environ.get("MODEL_DIR"):
            args.model_dir = Path(os.environ["MODEL_DIR"])
    try:
        # The environment is read here, not as parser defaults: a bad value is then one
        # line below, like any other bad input, not an argparse traceback.
        max_bytes = (args.max_request_bytes if args.max_request_bytes is not None
                     else env_int(MAX_REQUEST_BYTES_ENV, DEFAULT_MAX_REQUEST_BYTES))
        max_rows = (args.max_rows if args.max_rows is not None
                    else env_int(MAX_ROWS_ENV, DEFAULT_MAX_ROWS))
        serve(ServeOptions(model_dir=args.model_dir, model=args.model, export=args.export,
                           name=args.name, host=args.host, port=args.port,
                           workers=args.workers, max_request_bytes=max_bytes,
                           max_rows=max_rows))
    except TwinflowError as err:
        print(f"twinflow serve: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

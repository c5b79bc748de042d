"""``python -m components.serve``: the serving image's entrypoint (as `twinflow serve`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from components.errors import TwinflowError
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; 1 with a one-line message on bad input."""
    args = build_parser().parse_args(argv)
    if args.model_dir is None and args.model is None:
        args.model = os.environ.get("MODEL") or None
        if args.model is None and os.environ.get("MODEL_DIR"):
            args.model_dir = Path(os.environ["MODEL_DIR"])
    try:
        serve(ServeOptions(model_dir=args.model_dir, model=args.model, export=args.export,
                           name=args.name, host=args.host, port=args.port,
                           workers=args.workers))
    except TwinflowError as err:
        print(f"twinflow serve: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

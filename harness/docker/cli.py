"""`python -m harness images build | list` (the Docker backend's images)."""

from __future__ import annotations

import argparse

from .client import DockerUnavailable, connect
from .images import IMAGES, ImageError, build_all, image_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", required=True)
    build = sub.add_parser("build", help="make debian:bookworm-slim if missing (pull, else "
                           "debootstrap) and build the peer images from docker/")
    build.add_argument("--only", action="append", default=[],
                       help=f"image(s) to build (default: all: {', '.join(IMAGES)})")
    build.add_argument("--no-cache", action="store_true", help="ignore Docker's layer cache")
    build.add_argument("--rebuild-base", action="store_true",
                       help="make debian:bookworm-slim again with debootstrap")
    sub.add_parser("list", help="the images and their sizes")


def cmd_images(args: argparse.Namespace) -> int:
    try:
        client = connect()
    except DockerUnavailable as exc:
        print(f"error: {exc}")
        return 2
    if args.images_command == "list":
        for tag, short, mb, created in image_rows(client):
            print(f"  {tag:<36} {short:<14} {mb:7.0f} MB  {created}")
        return 0
    names = [n for value in args.only for n in value.split(",") if n]
    try:
        build_all(client, names or None, no_cache=args.no_cache,
                  rebuild_base=args.rebuild_base)
    except ImageError as exc:
        print(f"error: {exc}")
        return 1
    return 0

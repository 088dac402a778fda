"""Render lookdev stills lit by environment maps, in a process of its own.

    python -m lediff_blender.render_job --width 320 --height 240 --samples 16 \\
        --environment a.exr --ev 0 --output a.png [--environment b.exr --ev 1.5 --output b.png ...]

Callers (the ``lediff demo`` command) run this as a subprocess so that bpy's memory and any
crash stay out of their own process. Set ``BLENDER_USER_RESOURCES`` in its environment to keep
Blender away from the user's configuration. One line per finished still goes to stderr:
``render_job: done <i>/<n> <seconds>s <output>``.
"""

from __future__ import annotations

import argparse
import sys
import time

import bpy

from . import lookdev, world

PROGRESS_PREFIX = "render_job: done"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lediff_blender.render_job", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=320, help="still width in pixels")
    parser.add_argument("--height", type=int, default=240, help="still height in pixels")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--fstop", type=float, default=None, help="depth of field at this f-stop, focused on the chrome sphere")
    parser.add_argument("--environment", action="append", required=True, help="environment map (repeat)")
    parser.add_argument("--ev", action="append", type=float, required=True, help="world EV, one per environment")
    parser.add_argument("--output", action="append", required=True, help="PNG path, one per environment")
    return parser


def render_all(args: argparse.Namespace) -> None:
    """Build the lookdev scene once, then light it with each environment in turn and render."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.world = bpy.data.worlds.new("LEDiff Lookdev")
    objects = lookdev.build_lookdev_scene(scene)
    camera = lookdev.ensure_camera(scene)
    lookdev.set_depth_of_field(camera, fstop=args.fstop, focus_object=objects.chrome_sphere)
    jobs = list(zip(args.environment, args.ev, args.output))
    for index, (environment, ev, output) in enumerate(jobs, start=1):
        start = time.perf_counter()
        world.apply_environment(scene.world, environment, ev=ev)
        lookdev.render_still(scene, output, width=args.width, height=args.height, samples=args.samples)
        seconds = time.perf_counter() - start
        print(f"{PROGRESS_PREFIX} {index}/{len(jobs)} {seconds:.1f}s {output}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not len(args.environment) == len(args.ev) == len(args.output):
        parser.error("give one --ev and one --output per --environment")
    render_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fidelity of LDR -> HDR engines on Blender's eight CC0 HDRIs: metrics, sphere renders, pictures.

For each HDRI (the truth, resized to ``--width``) it simulates the 8-bit photos a user has: the
metered exposure (``exposure.metered_ev``) shifted by each of ``--exposures`` EV; through each of
``--responses``: ``crf``, a camera response drawn from a seeded rng (the LEDiff CRF family; the
k-th exposure of map m draws from ``default_rng([seed, m, k])``), and ``srgb``, the plain sRGB
curve the engines assume; stored as 8-bit PNG and as JPEG q90. Every engine runs on every photo:

- ``baseline``: the photo linearised as sRGB, what dropping the JPEG into Blender gives;
- ``classic``: the weight-free engine;
- ``lediff``: when its weights are found (``--model-dir`` or ``$LEDIFF_MODELS``), else it is
  listed as skipped with the reason.

Engines know neither the photo's exposure nor its response: as in ``tests/test_classic_expand.py``,
each prediction gets the one global scale that fits it to the truth on the pixels the photo did
not clip (``metrics.fit_scale``). Then, against the truth: SH-irradiance error, log-luminance
RMSE over the clipped pixels, key-light direction error, total energy ratio, peak and dynamic
range (stops, prediction minus truth), and the relative error of the mean luminance of a diffuse
and a glossy sphere rendered with Cycles (``_spheres.py``, one bpy subprocess per map) under the
prediction vs under the truth, at the world EV an incident-light meter picks for the truth.

Writes to ``--out DIR``: ``fidelity.json`` (settings, engines, every case, per-map and overall
averages; also printed), ``fidelity.md`` (the tables), ``strip_<map>.png`` (for the map's metered
JPEG through the first response, or its first photo: rows input / each engine / truth, tone-mapped
at -4, 0, +4 EV around the truth's auto exposure, and the spheres rendered under each) and
``chart_<metric>.png``.

    python bench/fidelity.py --out DIR [--maps city sunset] [--exposures 0 -1.5 1.5]
        [--responses crf srgb] [--formats png jpeg] [--width 1024] [--sphere-size 64] [--samples 32] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from _common import emit, machine
from PIL import Image, ImageDraw, ImageFont

from lediff_backend.classic.expand import ExpandSettings, linearise
from lediff_backend.convert import convert_pixels
from lediff_backend.demo import incident_ev
from lediff_backend.hdr import metrics
from lediff_backend.hdr.color import CRF, luminance, sample_crf_params
from lediff_backend.hdr.exposure import metered_ev, simulate_ldr
from lediff_backend.hdr.exr import read_exr, write_exr
from lediff_backend.hdr.projection import resize_equirect
from lediff_backend.hdr.tonemap import auto_exposure_ev, exposure_srgb
from lediff_backend.sample_data import STUDIOLIGHT_NAMES, studiolight_path

ROOT = Path(__file__).resolve().parents[1]
JPEG_QUALITY = 90
CLIP_LEVEL = ExpandSettings().clip_level
STRIP_EVS = (-4.0, 0.0, 4.0)
SPHERE_EV = -1.0  # the renders are lit so that a white surface facing up is 1.0
TRUTH = "truth"


class Metric(NamedTuple):
    key: str
    label: str
    absolute: bool  # a signed error averaged by its absolute value
    digits: int


METRICS = (
    Metric("sh_irradiance_error", "SH irradiance error", False, 3),
    Metric("clipped_log_rmse", "clipped log-lum RMSE (stops)", False, 2),
    Metric("key_light_deg", "key light error (°)", False, 1),
    Metric("energy_ratio", "energy / truth", False, 2),
    Metric("peak_stops", "peak − truth (stops)", False, 1),
    Metric("range_stops", "range − truth (stops)", False, 1),
    Metric("diffuse_sphere_error", "diffuse sphere error", True, 3),
    Metric("glossy_sphere_error", "glossy sphere error", True, 3),
)


class Engine(NamedTuple):
    name: str
    label: str
    run: Callable[[np.ndarray], np.ndarray] | None  # display-encoded photo -> scene-linear HDR
    skipped: str | None = None


class Photo(NamedTuple):
    offset_ev: float  # from the metered exposure
    ev: float
    response: CRF | str  # a sampled CRF or "srgb"
    format: str  # "png" or "jpeg"
    encoded: np.ndarray


def through_convert(engine: str, **options) -> Callable[[np.ndarray], np.ndarray]:
    """An engine of ``convert.ENGINES`` as a function of the display-encoded photo."""
    return lambda encoded: convert_pixels(encoded, engine=engine, **options)


def find_engines(model_dir: str | None) -> list[Engine]:
    """The baseline and classic engines, and LEDiff where its weights are found."""
    from lediff_backend.errors import MissingWeights
    from lediff_backend.weights import find_lediff_folders, lediff_available

    engines = [
        Engine("baseline", "baseline (linearised photo)", linearise),
        Engine("classic", "classic", through_convert("classic")),
    ]
    if lediff_available(model_dir):
        return [*engines, Engine("lediff", "LEDiff", through_convert("lediff", model_dir=model_dir))]
    try:
        find_lediff_folders(model_dir)
        reason = "the neural stack (torch, diffusers) is not installed"
    except MissingWeights as exc:  # its first line says where it looked
        reason = str(exc).splitlines()[0]
    return [*engines, Engine("lediff", "LEDiff", None, skipped=reason)]


def simulate_photos(truth: np.ndarray, map_index: int, args: argparse.Namespace) -> list[Photo]:
    """Every exposure x response x format of one map, in that order of loops."""
    metered = metered_ev(truth)
    photos = []
    for k, offset in enumerate(args.exposures):
        crf = sample_crf_params(np.random.default_rng([args.seed, map_index, k]))
        for response in (crf if name == "crf" else name for name in args.responses):
            for fmt in args.formats:
                quality = JPEG_QUALITY if fmt == "jpeg" else None
                photo = simulate_ldr(truth, ev=metered + offset, response=response, jpeg_quality=quality)
                photos.append(Photo(offset, photo.ev, response, fmt, photo.pixels))
    return photos


def describe_photo(name: str, photo: Photo) -> dict:
    """A case's description in the JSON."""
    crf = isinstance(photo.response, CRF)
    return {
        "map": name, "exposure_offset_ev": photo.offset_ev, "ev": round(photo.ev, 3), "format": photo.format,
        "response": "crf" if crf else photo.response,
        "crf": {key: round(value, 4) for key, value in photo.response._asdict().items()} if crf else None,
    }


def describe_response(response: CRF | str) -> str:
    return f"CRF beta {response.beta:.2f} gamma {response.gamma:.2f}" if isinstance(response, CRF) else "sRGB"


def truth_reference(truth: np.ndarray) -> dict:
    """What every prediction of this map is compared with, computed once."""
    return {
        "direction": metrics.dominant_light_direction(truth),
        "peak_stops": float(np.log2(luminance(truth).max())),
        "range_stops": metrics.dynamic_range_stops(truth),
        "energy": metrics.total_energy(truth),
    }


def lighting_metrics(prediction: np.ndarray, truth: np.ndarray, clipped: np.ndarray, reference: dict) -> dict:
    """Every metric but the spheres' (they need renders), for a prediction already fitted in scale."""
    return {
        "sh_irradiance_error": metrics.sh_irradiance_error(prediction, truth),
        "clipped_log_rmse": metrics.log_luminance_rmse(prediction, truth, clipped) if clipped.any() else None,
        "key_light_deg": metrics.angle_between_deg(
            metrics.dominant_light_direction(prediction), reference["direction"]
        ),
        "energy_ratio": metrics.total_energy(prediction) / reference["energy"],
        "peak_stops": float(np.log2(luminance(prediction).max())) - reference["peak_stops"],
        "range_stops": metrics.dynamic_range_stops(prediction) - reference["range_stops"],
    }


def sphere_means(render: Path) -> tuple[float, float]:
    """Mean luminance of the diffuse (left) and glossy (right) sphere's fully covered pixels."""
    rgba = read_exr(render, keep_alpha=True)[0]
    half = rgba.shape[1] // 2
    return tuple(float(luminance(side)[side[..., 3] > 0.999].mean()) for side in (rgba[:, :half], rgba[:, half:]))


def showcase_index(photos: list[Photo]) -> int:
    """The photo the strip shows: the metered JPEG when there is one, else the first."""
    return next((i for i, p in enumerate(photos) if p.offset_ev == 0 and p.format == "jpeg"), 0)


def predict(photos: list[Photo], truth: np.ndarray, engines: list[Engine]) -> dict:
    """(photo index, engine) -> (prediction fitted in scale to the truth, the engine's seconds)."""
    predictions = {}
    for i, photo in enumerate(photos):
        unclipped = photo.encoded.max(axis=-1) < CLIP_LEVEL
        for engine in (e for e in engines if e.run is not None):
            started = time.perf_counter()
            prediction = engine.run(photo.encoded)
            seconds = time.perf_counter() - started
            scale = np.float32(metrics.fit_scale(prediction, truth, unclipped))
            predictions[(i, engine.name)] = (prediction * scale, seconds)
    return predictions


def evaluate_map(map_index: int, name: str, args: argparse.Namespace, engines: list[Engine], work: Path) -> list[dict]:
    """Every case of one map: metrics per engine, sphere errors from one batch of renders, its strip.

    The renders run in their bpy subprocess while this process computes the other metrics.
    """
    truth = np.maximum(resize_equirect(read_exr(studiolight_path(name))[0], args.width), 0.0)
    photos = simulate_photos(truth, map_index, args)
    predictions = predict(photos, truth, engines)
    environments = {TRUTH: truth, **{key: prediction for key, (prediction, _) in predictions.items()}}
    with rendering(environments, incident_ev(truth), args, work) as renders:
        reference = truth_reference(truth)
        cases = []
        for i, photo in enumerate(photos):
            clipped = photo.encoded.max(axis=-1) >= CLIP_LEVEL
            results = {
                engine: {**lighting_metrics(prediction, truth, clipped, reference), "seconds": seconds}
                for (index, engine), (prediction, seconds) in predictions.items() if index == i
            }
            cases.append({**describe_photo(name, photo), "clipped_fraction": round(float(clipped.mean()), 5),
                          "engines": results})
    add_sphere_errors(cases, renders)
    shown = showcase_index(photos)
    write_strip(args.out / f"strip_{name}.png", name, photos[shown], shown, engines, environments, renders, args.tile)
    return cases


@contextlib.contextmanager
def rendering(environments: dict, ev: float, args: argparse.Namespace, work: Path):
    """Start the sphere renders of every environment, lit at world EV ``ev``, in one bpy subprocess
    running ``_spheres.py``; yield render key -> sphere render EXR; on leaving, wait for them."""
    jobs, renders = [], {}
    for key, environment in environments.items():
        path = work / (f"{key[0]}_{key[1]}.exr" if isinstance(key, tuple) else f"{key}.exr")
        write_exr(path, environment)
        renders[key] = path.with_name(f"render_{path.name}")
        jobs.append({"environment": str(path), "ev": ev, "output": str(renders[key])})
    spec, log = work / "spheres.json", work / "spheres.log"
    size = args.sphere_size
    spec.write_text(json.dumps({"width": 2 * size, "height": size, "samples": args.samples, "jobs": jobs}))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(work / "blender-user"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "bench" / "_spheres.py"), str(spec)]
    with open(log, "w", encoding="utf-8") as sink:  # a file, not a pipe: nobody reads Blender's chatter meanwhile
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield renders
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.wait() != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"the sphere renders failed (exit code {process.returncode}):\n{tail}")


def add_sphere_errors(cases: list[dict], renders: dict) -> None:
    """Each sphere's relative mean-luminance error, prediction vs truth, into every case's results."""
    truth_diffuse, truth_glossy = sphere_means(renders[TRUTH])
    for i, case in enumerate(cases):
        for engine, result in case["engines"].items():
            diffuse, glossy = sphere_means(renders[(i, engine)])
            result["diffuse_sphere_error"] = diffuse / truth_diffuse - 1.0
            result["glossy_sphere_error"] = glossy / truth_glossy - 1.0


# --- pictures -------------------------------------------------------------------------------

def _tile(display: np.ndarray, width: int) -> Image.Image:
    """Display values in [0, 1] as an 8-bit image ``width`` wide, 2:1."""
    image = Image.fromarray((np.clip(display, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
    return image.resize((width, width // 2), Image.Resampling.BILINEAR)


def write_strip(
    path: Path, name: str, photo: Photo, shown: int, engines: list[Engine], environments: dict, renders: dict, tile: int
) -> None:
    """Rows input / each engine / truth: the map at -4, 0, +4 EV and the spheres rendered under it."""
    truth = environments[TRUTH]
    ev = auto_exposure_ev(truth)
    rows = [(engine.label if engine.name != "baseline" else "input photo, linearised", (shown, engine.name))
            for engine in engines if engine.run is not None]
    rows.append(("truth", TRUTH))
    band, font = 16, ImageFont.load_default()
    canvas = Image.new("RGB", (4 * tile, 2 * band + len(rows) * tile // 2), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    title = (f"{name}: photo at the metered exposure {photo.offset_ev:+.1f} EV, "
             f"{describe_response(photo.response)}, "
             f"{'JPEG q%d' % JPEG_QUALITY if photo.format == 'jpeg' else '8-bit PNG'}")
    draw.text((4, 2), title, fill=(235, 235, 235), font=font)
    for column, heading in enumerate([f"{d:+.0f} EV" for d in STRIP_EVS] + ["diffuse | glossy sphere"]):
        draw.text((column * tile + 4, band + 2), heading, fill=(200, 200, 200), font=font)
    for row, (label, key) in enumerate(rows):
        top = 2 * band + row * tile // 2
        for column, offset in enumerate(STRIP_EVS):
            canvas.paste(_tile(exposure_srgb(environments[key], ev + offset), tile), (column * tile, top))
        canvas.paste(_tile(exposure_srgb(read_exr(renders[key])[0], SPHERE_EV), tile), (3 * tile, top))
        draw.text((4, top + 2), label, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    canvas.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def write_chart(path: Path, metric: Metric, per_map: dict, overall: dict, engines: list[str]) -> None:
    """Grouped bars: one group per map and one for the mean, one bar per engine."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    groups = [*per_map, "mean"]
    values = {**per_map, "mean": overall}
    figure, axes = pyplot.subplots(figsize=(7.5, 2.6), dpi=90)
    width = 0.8 / len(engines)
    for j, engine in enumerate(engines):
        heights = [values[g][engine][metric.key] for g in groups]
        heights = [np.nan if h is None else h for h in heights]
        axes.bar(np.arange(len(groups)) + (j - (len(engines) - 1) / 2) * width, heights, width, label=engine)
    axes.set_xticks(np.arange(len(groups)), groups)
    axes.set_title(metric.label + (" (mean of |relative error|)" if metric.absolute else ""))
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.legend(fontsize="small", frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


# --- summaries and tables -------------------------------------------------------------------

def summarise(cases: list[dict], engines: list[str]) -> dict:
    """Engine -> metric (and seconds per photo) -> mean over ``cases``; None where no case has a value."""
    summary = {}
    for engine in engines:
        results = [case["engines"][engine] for case in cases]
        summary[engine] = {}
        for metric in METRICS:
            values = [r[metric.key] for r in results if r[metric.key] is not None]
            values = np.abs(values) if metric.absolute else values
            summary[engine][metric.key] = round(float(np.mean(values)), 4) if len(values) else None
        summary[engine]["seconds"] = round(float(np.mean([r["seconds"] for r in results])), 3)
    return summary


def summarise_by(cases: list[dict], field: str, engines: list[str], name: Callable = str) -> dict:
    """``summarise`` per group of cases that share ``field`` (keys: ``name(value)``, in order of appearance)."""
    groups: dict[str, list[dict]] = {}
    for case in cases:
        groups.setdefault(name(case[field]), []).append(case)
    return {key: summarise(group, engines) for key, group in groups.items()}


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(first: list[str], rows: list[tuple[list[str], dict]]) -> list[str]:
    """Rows of names and then every metric, and the engine's seconds per photo."""
    header = [*first, *(m.label for m in METRICS), "s / photo"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for names, values in rows:
        cells = [*names, *(_cell(values[m.key], m.digits) for m in METRICS), _cell(values["seconds"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    """A paragraph on what was measured, then the tables: overall, per exposure, per map; then links."""
    settings, engines = report["settings"], report["engines"]
    ran = [name for name, info in engines.items() if info["status"] == "ran"]
    label = {name: info["label"] for name, info in engines.items()}
    skipped = [f"{e['label']} skipped: {e['reason'].rstrip('.')}." for e in engines.values() if "reason" in e]
    lines = [
        f"Fidelity on {len(settings['maps'])} of Blender's CC0 HDRIs, {len(report['cases'])} photos "
        f"(exposures {', '.join(f'{e:+g}' for e in settings['exposures'])} EV from the metered one; responses "
        f"{' and '.join(settings['responses'])}; {' and '.join(settings['formats'])}; width {settings['width']}; "
        f"the engines assume sRGB), each prediction scaled to the truth on "
        f"its unclipped pixels. Means over the photos (clipped RMSE: over those with clipped pixels); sphere errors "
        f"are the mean |relative error| of the sphere's mean luminance ({settings['sphere_size']} px, "
        f"{settings['samples']} Cycles samples). " + " ".join(skipped),
        "",
        *markdown_table(["engine"], [([label[e]], report["summary"][e]) for e in ran]),
    ]
    for title, key in (("Per response", "per_response"), ("Per exposure", "per_exposure"), ("Per map", "per_map")):
        groups = report[key]
        lines += ["", f"{title}:", ""]
        lines += markdown_table(["", "engine"], [([g, label[e]], groups[g][e]) for g in groups for e in ran])
    strips = ", ".join(f"[{m}](strip_{m}.png)" for m in settings["maps"])
    charts = ", ".join(f"[{m.label}](chart_{m.key}.png)" for m in METRICS)
    lines += ["", f"Strips: {strips}.", "", f"Charts: {charts}.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, required=True, help="folder for fidelity.json, fidelity.md and the pictures")
    cli.add_argument("--maps", nargs="+", choices=STUDIOLIGHT_NAMES, default=list(STUDIOLIGHT_NAMES))
    cli.add_argument("--exposures", nargs="+", type=float, default=[0.0, -1.5, 1.5], help="EV from the metered one")
    cli.add_argument("--responses", nargs="+", choices=("crf", "srgb"), default=["crf", "srgb"],
                     help="camera responses: a sampled LEDiff-family CRF, plain sRGB")
    cli.add_argument("--formats", nargs="+", choices=("png", "jpeg"), default=["png", "jpeg"])
    cli.add_argument("--width", type=int, default=1024, help="panorama width (the HDRIs are 1024 wide)")
    cli.add_argument("--sphere-size", type=int, default=64, help="sphere render height in pixels (two side by side)")
    cli.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    cli.add_argument("--tile", type=int, default=192, help="width of one panorama in the strips")
    cli.add_argument("--seed", type=int, default=0, help="seeds the camera responses")
    cli.add_argument("--model-dir", help="LEDiff models folder (default: $LEDIFF_MODELS)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    engines = find_engines(args.model_dir)
    ran = [e.name for e in engines if e.run is not None]
    started = time.perf_counter()
    cases = []
    with tempfile.TemporaryDirectory(prefix="lediff-fidelity-") as work:
        for name in args.maps:
            folder = Path(work) / name
            folder.mkdir()
            cases += evaluate_map(STUDIOLIGHT_NAMES.index(name), name, args, engines, folder)
            print(f"fidelity: {name} done, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    per_map = summarise_by(cases, "map", ran)
    report = {
        "benchmark": "fidelity",
        "machine": machine(),
        "settings": {key: value for key, value in vars(args).items() if key not in ("out", "model_dir")},
        "engines": {e.name: {"label": e.label, "status": "ran"} if e.run else
                    {"label": e.label, "status": "skipped", "reason": e.skipped} for e in engines},
        "metrics": {m.key: m.label for m in METRICS},
        "summary": summarise(cases, ran),
        "per_response": summarise_by(cases, "response", ran),
        "per_exposure": summarise_by(cases, "exposure_offset_ev", ran, lambda ev: f"{ev:+g} EV"),
        "per_map": per_map,
        "cases": cases,
        "seconds": round(time.perf_counter() - started, 1),
    }
    for metric in METRICS:
        write_chart(args.out / f"chart_{metric.key}.png", metric, per_map, report["summary"], ran)
    (args.out / "fidelity.md").write_text(markdown(report), encoding="utf-8")
    emit(report, args.out / "fidelity.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classic bracket merge of three 1500x1000 exposures against OpenCV's, in the same run.

The brackets are 8-bit sRGB exposures at −2/0/+2 EV of a real CC0 HDRI (a 1500x1000 crop of
``sunrise`` resampled to 2000x1000), with a square moving between them. Cases, interleaved:
``merge_brackets`` (alignment + merge with ghost removal) against OpenCV ``AlignMTB`` +
``MergeDebevec`` given the same sRGB response, and ``fuse`` (the merge alone) against
``MergeDebevec`` alone. OpenCV uses all its threads; ours its strips of rows on every CPU.

    python bench/merge.py [--repeat 5] [--out FILE]
"""

from __future__ import annotations

import numpy as np

from _common import best_of_interleaved, emit, machine, parser

WIDTH, HEIGHT = 1500, 1000
EVS = [-2.0, 0.0, 2.0]
TARGET_S = 1.5  # issue 9: three 1500x1000 brackets on 2 cores


def make_brackets() -> list[np.ndarray]:
    from lediff_backend.hdr.exposure import expose, metered_ev, quantize
    from lediff_backend.hdr.imageio import read_image
    from lediff_backend.hdr.projection import resize_equirect
    from lediff_backend.sample_data import studiolight_path

    wide = resize_equirect(read_image(studiolight_path("sunrise")).pixels, 2 * HEIGHT)
    hdr = np.ascontiguousarray(wide[:, (2 * HEIGHT - WIDTH) // 2 : (2 * HEIGHT + WIDTH) // 2])
    ev0 = metered_ev(hdr)
    images = []
    for k, ev in enumerate(EVS):
        scene = hdr.copy()
        scene[400:500, 300 + 200 * k : 400 + 200 * k] = 0.18 * 2.0**-ev0
        images.append(quantize(expose(scene, ev0 + ev)))
    return images


def opencv_cases(images: list[np.ndarray]) -> dict:
    """OpenCV's MTB alignment + Debevec merge with the sRGB response, or {} without OpenCV."""
    try:
        import cv2
    except ImportError:
        return {}
    from lediff_backend.hdr.color import srgb_to_linear

    codes = [np.round(im[..., ::-1] * 255).astype(np.uint8) for im in images]
    times = np.float32(2.0 ** np.array(EVS))
    table = np.maximum(srgb_to_linear(np.linspace(0, 1, 256, dtype=np.float32)), 1e-8)
    response = np.repeat(table[:, None, None], 3, axis=2)
    debevec, align = cv2.createMergeDebevec(), cv2.createAlignMTB()

    def align_and_merge():
        aligned = [c.copy() for c in codes]
        align.process(codes, aligned)
        return debevec.process(aligned, times, response)

    return {"opencv_align_debevec": align_and_merge, "opencv_debevec": lambda: debevec.process(codes, times, response)}


def main() -> None:
    from lediff_backend.classic.merge import _usable_cpus, fuse, merge_brackets
    from lediff_backend.hdr.color import srgb_to_linear

    args = parser(__doc__.splitlines()[0]).parse_args()
    images = make_brackets()
    cases = {
        "classic_merge": lambda: merge_brackets(images, EVS),
        "classic_fuse": lambda: fuse(images, EVS, inverse_response=srgb_to_linear),
        **opencv_cases(images),
    }
    timings = best_of_interleaved(cases, args.repeat)
    seconds = {name: round(t.wall_s, 3) for name, t in timings.items()}
    result = {
        "benchmark": "merge",
        "machine": machine(),
        "size": [WIDTH, HEIGHT],
        "brackets": len(EVS),
        "threads": min(8, _usable_cpus()),
        "wall_s": seconds,
        "cpu_s": {name: round(t.cpu_s, 3) for name, t in timings.items()},
        "target_s": TARGET_S,
        "meets_target": seconds["classic_merge"] <= TARGET_S,
    }
    if "opencv_debevec" in seconds:
        result["ratio_merge_vs_opencv_align_debevec"] = round(seconds["classic_merge"] / seconds["opencv_align_debevec"], 2)
        result["ratio_fuse_vs_opencv_debevec"] = round(seconds["classic_fuse"] / seconds["opencv_debevec"], 2)
    else:
        result["opencv"] = "not installed: pip install 'opencv-python-headless<4.11'"
    emit(result, args.out)


if __name__ == "__main__":
    main()

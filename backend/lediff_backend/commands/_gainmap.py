"""``--gainmap OUT.jpg`` for the commands that write an HDR image: an Ultra HDR (ISO 21496-1) gain-map
JPEG beside it."""

from __future__ import annotations


def check_gainmap_output(path: str | None) -> None:
    """BadInput before any work when the gain-map JPEG could not be written."""
    if path is not None:
        from ..hdr.atomic import check_writable_output

        check_writable_output(path)


def write_gainmap_of(meta: dict, path: str | None) -> None:
    """Write the gain-map JPEG of the HDR file a command just wrote (``meta["output"]``) and
    name it in ``meta["gainmap"]``."""
    if path is None:
        return
    from ..hdr.gainmap import write_gainmap_jpeg
    from ..hdr.imageio import read_image

    write_gainmap_jpeg(path, read_image(meta["output"]).pixels)
    meta["gainmap"] = path

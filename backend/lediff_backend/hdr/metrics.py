"""Measures of HDR environment maps that matter for lighting.

Functions
---------
- ``dynamic_range_stops``: log2 ratio of bright to dark luminance percentiles.
- ``log_luminance_rmse``: RMS difference of log2 luminance (in stops), optionally masked.
- ``total_energy``: solid-angle-weighted luminance over the sphere (equirect only).
- ``fit_scale``: the one global factor that best matches a prediction to the truth in log space.
- ``sh_coefficients`` / ``sh_irradiance`` / ``sh_irradiance_error``: order-2 spherical harmonics
  of an equirect map and the diffuse irradiance they give (Ramamoorthi & Hanrahan 2001).
- ``dominant_light_direction`` / ``angle_between_deg``: where most light comes from.
- ``wrap_seam_score``: how much the left and right edges of a panorama disagree, relative to
  neighbouring interior columns (≈1 means the seam looks like any other column pair).

Images are scene-linear HxWx3 float32; equirect maps follow ``projection``'s orientation.
"""

from __future__ import annotations

import numpy as np

from .color import luminance
from .projection import equirect_directions, resize_equirect, solid_angle_weights

__all__ = [
    "dynamic_range_stops",
    "log_luminance_rmse",
    "total_energy",
    "fit_scale",
    "sh_coefficients",
    "sh_irradiance",
    "sh_irradiance_error",
    "dominant_light_direction",
    "angle_between_deg",
    "wrap_seam_score",
]

LOG_FLOOR = 1e-4  # luminance floor before log2: darker values are noise for lighting purposes

# Convolution of order-0/1/2 SH with the clamped cosine lobe (Ramamoorthi & Hanrahan 2001).
_COSINE_LOBE = np.array([np.pi] + [2 * np.pi / 3] * 3 + [np.pi / 4] * 5)


def dynamic_range_stops(hdr: np.ndarray, low_percentile: float = 0.1, high_percentile: float = 99.9) -> float:
    """Stops between the low and high luminance percentiles of the positive pixels."""
    lum = luminance(hdr).ravel()
    lum = lum[lum > 0]
    if lum.size == 0:
        return 0.0
    low, high = np.percentile(lum, [low_percentile, high_percentile])
    return float(np.log2(high / low))


def _log_lum(hdr: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(luminance(hdr), LOG_FLOOR))


def log_luminance_rmse(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMS of the log2-luminance difference in stops, over ``mask`` (HxW bool) if given."""
    diff = _log_lum(prediction) - _log_lum(truth)
    if mask is not None:
        diff = diff[mask]
    return float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0


def total_energy(hdr: np.ndarray) -> float:
    """∫ L dω over the sphere for an equirect map (relative units)."""
    height, width = hdr.shape[:2]
    return float((luminance(hdr) * solid_angle_weights(height, width)).sum())


def fit_scale(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Global factor s minimising the log-luminance error of ``s * prediction`` over ``mask``."""
    diff = _log_lum(truth) - _log_lum(prediction)
    if mask is not None:
        diff = diff[mask]
    return float(2.0 ** np.median(diff)) if diff.size else 1.0


def _sh_basis(directions: np.ndarray) -> np.ndarray:
    """Real SH basis Y_00..Y_22 at ...x3 unit directions, shape (...)x9."""
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return np.stack(
        [
            np.full_like(x, 0.282095),
            0.488603 * y,
            0.488603 * z,
            0.488603 * x,
            1.092548 * x * y,
            1.092548 * y * z,
            0.315392 * (3 * z * z - 1),
            1.092548 * x * z,
            0.546274 * (x * x - y * y),
        ],
        axis=-1,
    )


def sh_coefficients(hdr: np.ndarray) -> np.ndarray:
    """Order-2 SH projection of an equirect RGB map: 9x3 coefficients."""
    height, width = hdr.shape[:2]
    basis = _sh_basis(equirect_directions(height, width).astype(np.float64))
    weighted = np.asarray(hdr[..., :3], dtype=np.float64) * solid_angle_weights(height, width)[..., None]
    return np.einsum("hwk,hwc->kc", basis, weighted)


def sh_irradiance(coefficients: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Diffuse irradiance (RGB) at ...x3 unit normals from 9x3 SH coefficients."""
    return _sh_basis(normals) @ (coefficients * _COSINE_LOBE[:, None])


def sh_irradiance_error(prediction: np.ndarray, truth: np.ndarray, samples: tuple[int, int] = (32, 64)) -> float:
    """Relative RMS error of diffuse irradiance over all normals (0 = identical lighting).

    The normals are an equirect grid weighted by solid angle; the error is normalised by the
    RMS irradiance of the truth, so it is a fraction (0.1 = 10 %).
    """
    normals = equirect_directions(*samples).astype(np.float64)
    weights = solid_angle_weights(*samples)[..., None]
    e_pred = sh_irradiance(sh_coefficients(prediction), normals)
    e_true = sh_irradiance(sh_coefficients(truth), normals)
    return float(np.sqrt((weights * (e_pred - e_true) ** 2).sum() / (weights * e_true**2).sum()))


def _irradiance_at(hdr_small: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Cosine-weighted luminance integral ∫ L max(0, n·ω) dω at each of Nx3 normals."""
    height, width = hdr_small.shape[:2]
    energy = (luminance(hdr_small) * solid_angle_weights(height, width)).ravel().astype(np.float64)
    directions = equirect_directions(height, width).reshape(-1, 3).astype(np.float64)
    return np.clip(normals @ directions.T, 0.0, None) @ energy


def dominant_light_direction(hdr: np.ndarray, resolution_deg: float = 0.5) -> np.ndarray:
    """Unit normal that receives the most irradiance: the key light's direction.

    A coarse search over a 64x32 grid of normals is refined on a local grid of
    ``resolution_deg`` spacing. The map is area-averaged to at most 256 columns first, which
    keeps all of its energy (a sun stays a sun, only wider): 128 columns for the coarse
    search, 256 for the refinement.
    """
    coarse_map = resize_equirect(hdr[..., :3], min(128, hdr.shape[1]))
    fine_map = resize_equirect(hdr[..., :3], min(256, hdr.shape[1]))
    coarse = equirect_directions(32, 64).reshape(-1, 3).astype(np.float64)
    best = coarse[np.argmax(_irradiance_at(coarse_map, coarse))]
    # Local tangent grid of ±6° around the coarse winner (its cells are 5.6° wide).
    helper = np.array([0.0, 0.0, 1.0]) if abs(best[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    tangent = np.cross(best, helper)
    tangent /= np.linalg.norm(tangent)
    bitangent = np.cross(best, tangent)
    offsets = np.radians(np.arange(-6.0, 6.0 + 1e-9, resolution_deg))
    a, b = np.meshgrid(offsets, offsets)
    fine = best + a.reshape(-1, 1) * tangent + b.reshape(-1, 1) * bitangent
    fine /= np.linalg.norm(fine, axis=1, keepdims=True)
    return fine[np.argmax(_irradiance_at(fine_map, fine))]


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two directions in degrees."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cosine = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def wrap_seam_score(panorama: np.ndarray) -> float:
    """Mean |last column − first column| over the mean difference of adjacent interior columns.

    Computed on log luminance so that bright and dark regions count alike. A seamless
    panorama scores about 1; a visible seam scores well above.
    """
    log_lum = _log_lum(panorama)
    seam = np.abs(log_lum[:, -1] - log_lum[:, 0]).mean()
    interior = np.abs(np.diff(log_lum, axis=1)).mean()
    return float(seam / interior) if interior > 0 else float(seam > 0)

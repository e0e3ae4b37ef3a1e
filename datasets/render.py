"""A small vectorised z-buffer renderer of tapered capsules and plates, and backgrounds.

Used by `datasets.synthetic`. Pixel convention (OpenCV's): pixel (row v, column u) is the
sample at continuous image coordinates (u, v), so pixel centres sit on integer coordinates
and the image covers [-0.5, W - 0.5) x [-0.5, H - 0.5). A 3D point X in the camera frame
(x right, y down, z forward, metres) lands at ``(K @ X)[:2] / z`` in these coordinates,
which is the pixel ``round(u), round(v)``.

Capsules are drawn as impostors: every pixel of the projected capsule gets the depth and
normal of the front surface of a sphere swept along the segment (radius interpolated from
one end to the other). This is exact for spheres and very close for the thin, short
segments of a hand, and it costs only a few numpy operations on the capsule's bounding box.
Flat plates (the palm) are polygons whose depth is that of their best-fit plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EMPTY_DEPTH_M = np.float32(np.inf)
RHD_DEPTH_MAX_M = 5.0


@dataclass
class Buffers:
    """Per-pixel render targets; primitives come in any order, the depth test keeps the
    nearest surface.

    Attributes:
        depth_m: (H, W) float32 depth (z) of the nearest surface, inf where empty.
        normal: (H, W, 3) float32 unit surface normal in the camera frame.
        label: (H, W) uint8 segmentation label (RHD mask classes).
        material: (H, W) uint8 index into the materials table of `shade` (0 = empty).
    """

    depth_m: np.ndarray
    normal: np.ndarray
    label: np.ndarray
    material: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> Buffers:
        return cls(
            depth_m=np.full((height, width), EMPTY_DEPTH_M, dtype=np.float32),
            normal=np.zeros((height, width, 3), dtype=np.float32),
            label=np.zeros((height, width), dtype=np.uint8),
            material=np.zeros((height, width), dtype=np.uint8),
        )


def draw_capsule(buf: Buffers, K: np.ndarray, p0: np.ndarray, p1: np.ndarray, r0: float,
                 r1: float, label: int, material: int, near_m: float = 0.05) -> None:
    """Draw a tapered capsule with the depth test.

    Args:
        buf: render targets, updated in place.
        K: (3, 3) intrinsics (fx == fy assumed for the projected radius).
        p0, p1: (3,) end points in the camera frame, metres.
        r0, r1: radii at the two ends, metres.
        label: segmentation label written where the capsule is in front.
        material: material index written where the capsule is in front.
        near_m: capsules with an end closer than this are skipped (behind the camera).
    """
    z0, z1 = float(p0[2]), float(p1[2])
    if min(z0, z1) < near_m:
        return
    f = float(K[0, 0])
    a = np.array([K[0, 0] * p0[0] / z0 + K[0, 2], K[1, 1] * p0[1] / z0 + K[1, 2]])
    b = np.array([K[0, 0] * p1[0] / z1 + K[0, 2], K[1, 1] * p1[1] / z1 + K[1, 2]])
    ra, rb = f * r0 / z0, f * r1 / z1
    height, width = buf.depth_m.shape
    rmax = max(ra, rb)
    u_lo = max(int(np.floor(min(a[0], b[0]) - rmax)), 0)
    u_hi = min(int(np.ceil(max(a[0], b[0]) + rmax)), width - 1)
    v_lo = max(int(np.floor(min(a[1], b[1]) - rmax)), 0)
    v_hi = min(int(np.ceil(max(a[1], b[1]) + rmax)), height - 1)
    if u_lo > u_hi or v_lo > v_hi:
        return
    us = np.arange(u_lo, u_hi + 1, dtype=np.float32)[None, :] - np.float32(a[0])
    vs = np.arange(v_lo, v_hi + 1, dtype=np.float32)[:, None] - np.float32(a[1])
    ab = (b - a).astype(np.float32)
    len2 = float(ab @ ab)
    if len2 > 1e-9:
        t = np.clip((us * ab[0] + vs * ab[1]) / np.float32(len2), 0.0, 1.0)
    else:
        t = np.zeros(np.broadcast_shapes(us.shape, vs.shape), dtype=np.float32)
    dx = us - t * ab[0]
    dy = vs - t * ab[1]
    r = ra + t * np.float32(rb - ra)
    d2 = dx * dx + dy * dy
    inside = d2 < r * r
    if not inside.any():
        return
    cover = np.sqrt(np.maximum(1.0 - d2 / np.maximum(r * r, 1e-6), 0.0))
    # Perspective-correct depth along the axis: 1/z is linear in screen space.
    zc = 1.0 / (1.0 / z0 + t * np.float32(1.0 / z1 - 1.0 / z0))
    depth = zc - (r * zc / f) * cover
    region = (slice(v_lo, v_hi + 1), slice(u_lo, u_hi + 1))
    zbuf = buf.depth_m[region]
    win = inside & (depth < zbuf)
    if not win.any():
        return
    zbuf[win] = depth[win]
    # (dx, dy) / r and the cover term make a unit vector: |n|^2 = d2/r^2 + 1 - d2/r^2.
    inv_r = 1.0 / np.maximum(r, 1e-6)
    normal = buf.normal[region]
    normal[..., 0][win] = (dx * inv_r)[win]
    normal[..., 1][win] = (dy * inv_r)[win]
    normal[..., 2][win] = -cover[win]
    buf.label[region][win] = label
    buf.material[region][win] = material


def draw_plate(buf: Buffers, K: np.ndarray, points: np.ndarray, half_thickness: float,
               label: int, material: int, near_m: float = 0.05) -> None:
    """Draw the camera-facing side of a thick flat polygon (a palm) with the depth test.

    The polygon's best-fit plane is moved ``half_thickness`` towards the camera; its
    outline is the projection of ``points`` (drawn in order). Rounded rims are the
    caller's job (capsules along the outline).

    Args:
        buf: render targets, updated in place.
        K: (3, 3) intrinsics.
        points: (N, 3) outline in the camera frame, metres.
        half_thickness: metres.
        label: segmentation label.
        material: material index.
        near_m: plates with a point closer than this are skipped.
    """
    if points[:, 2].min() < near_m:
        return
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre)[2][2]
    if normal @ centre > 0:
        normal = -normal  # face the camera
    front = centre + half_thickness * normal
    uv = points[:, :2] / points[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    height, width = buf.depth_m.shape
    u_lo, v_lo = np.maximum(np.floor(uv.min(axis=0)).astype(int), 0)
    u_hi = min(int(np.ceil(uv[:, 0].max())), width - 1)
    v_hi = min(int(np.ceil(uv[:, 1].max())), height - 1)
    if u_lo > u_hi or v_lo > v_hi:
        return
    inside = np.zeros((v_hi - v_lo + 1, u_hi - u_lo + 1), dtype=np.uint8)
    shift = 4
    poly = np.round((uv - (u_lo, v_lo)) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(inside, [poly], 1, cv2.LINE_8, shift)
    inside = inside.astype(bool)
    if not inside.any():
        return
    # Ray through pixel (u, v): ((u - cx) / fx, (v - cy) / fy, 1); depth where it meets
    # the front plane n . X = n . front.
    rx = (np.arange(u_lo, u_hi + 1, dtype=np.float32) - np.float32(K[0, 2])) / np.float32(K[0, 0])
    ry = (np.arange(v_lo, v_hi + 1, dtype=np.float32)[:, None] - np.float32(K[1, 2])) / np.float32(
        K[1, 1])
    denom = np.float32(normal[0]) * rx + np.float32(normal[1]) * ry + np.float32(normal[2])
    grazing = np.abs(denom) < 0.2  # nearly edge-on: leave it to the rims
    depth = np.float32(normal @ front) / np.where(grazing, np.float32(1.0), denom)
    region = (slice(v_lo, v_hi + 1), slice(u_lo, u_hi + 1))
    zbuf = buf.depth_m[region]
    win = inside & ~grazing & (depth > near_m) & (depth < zbuf)
    if not win.any():
        return
    zbuf[win] = depth[win]
    buf.normal[region][win] = normal.astype(np.float32)
    buf.label[region][win] = label
    buf.material[region][win] = material


@dataclass(frozen=True)
class Light:
    """Directional light plus ambient term.

    Attributes:
        direction: (3,) unit vector from the surface towards the light, camera frame.
        ambient: ambient intensity.
        diffuse: diffuse intensity.
        specular: specular intensity.
        color: (3,) RGB tint of the light.
        wrap: wrap-around factor softening the terminator (skin scatters light).
    """

    direction: np.ndarray
    ambient: float
    diffuse: float
    specular: float
    color: np.ndarray
    wrap: float


def random_light(rng: np.random.Generator) -> Light:
    """A light from the camera's side of the scene with random direction and strength."""
    direction = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), -rng.uniform(0.3, 1.2)])
    return Light(
        direction=direction / np.linalg.norm(direction),
        ambient=rng.uniform(0.2, 0.5),
        diffuse=rng.uniform(0.45, 0.9),
        specular=rng.uniform(0.0, 0.25),
        color=rng.uniform(0.9, 1.1, 3),
        wrap=rng.uniform(0.1, 0.5),
    )


def shade(buf: Buffers, background_rgb: np.ndarray, albedo_rgb: np.ndarray, light: Light,
          texture: np.ndarray | None = None) -> np.ndarray:
    """Composite the shaded surfaces over a background.

    Args:
        buf: filled render targets.
        background_rgb: (H, W, 3) float32 background in [0, 255].
        albedo_rgb: (M, 3) albedo of each material in [0, 255]; row 0 is unused.
        light: the scene light.
        texture: optional (H, W) float32 multiplicative surface texture around 1.

    Returns:
        (H, W, 3) float32 image in [0, 255] (not clipped).
    """
    drawn = buf.material > 0
    image = background_rgb.copy()
    if not drawn.any():
        return image
    n = buf.normal[drawn]  # (P, 3)
    ndl = n @ light.direction.astype(np.float32)
    diffuse = np.clip((ndl + light.wrap) / (1.0 + light.wrap), 0.0, None)
    half = light.direction + np.array([0.0, 0.0, -1.0])
    half = (half / np.linalg.norm(half)).astype(np.float32)
    spec = np.clip(n @ half, 0.0, None) ** 24
    albedo = albedo_rgb.astype(np.float32)[buf.material[drawn]]
    if texture is not None:
        albedo = albedo * texture[drawn][:, None]
    color = albedo * (light.ambient + light.diffuse * diffuse)[:, None]
    color = color * light.color.astype(np.float32) + (255.0 * light.specular * spec)[:, None]
    image[drawn] = color
    return image


# --- Colours ----------------------------------------------------------------------------

SKIN_TONES_RGB = np.array([
    (255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
    (92, 56, 36), (255, 205, 148), (234, 192, 134), (255, 173, 96), (197, 140, 133),
    (236, 188, 180), (120, 75, 50),
], dtype=np.float32)  # fmt: skip


def random_skin_rgb(rng: np.random.Generator) -> np.ndarray:
    """(3,) a skin tone: a blend of two neighbouring palette entries with a little jitter."""
    i, j = rng.integers(0, len(SKIN_TONES_RGB), size=2)
    w = rng.uniform(0.0, 1.0)
    rgb = w * SKIN_TONES_RGB[i] + (1 - w) * SKIN_TONES_RGB[j]
    return np.clip(rgb * rng.uniform(0.85, 1.1) + rng.normal(0.0, 6.0, 3), 20, 255)


def random_rgb(rng: np.random.Generator) -> np.ndarray:
    """(3,) an arbitrary colour, sometimes skin-like (distractors must not be rare)."""
    if rng.random() < 0.2:
        return random_skin_rgb(rng)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 256), rng.integers(20, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


# --- Backgrounds --------------------------------------------------------------------------

def _ramp(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) float32 in [0, 1] rising linearly along a random direction."""
    angle = rng.uniform(0.0, 2 * np.pi)
    xs = np.arange(width, dtype=np.float32) * np.float32(np.cos(angle))
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(angle))
    proj = xs + ys
    lo, hi = float(proj.min()), float(proj.max())
    return (proj - np.float32(lo)) / np.float32(max(hi - lo, 1.0))


def _blend(c0: np.ndarray, c1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32: c0 where w = 0, c1 where w = 1."""
    c0 = c0.astype(np.float32)
    return c0 + w[..., None] * (c1.astype(np.float32) - c0)


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c0, c1 = random_rgb(rng), random_rgb(rng)
    return _blend(c0, c1, _ramp(rng, height, width))


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int,
                  channels: int) -> np.ndarray:
    small = rng.random((cells, cells, channels), dtype=np.float32)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return out.reshape(height, width, channels)


def _texture_patch(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) a full-frame texture: stripes, checker, colour noise or fine grain.

    Sizes (stripe period, checker cell) are for a half-resolution texture.
    """
    kind = rng.integers(0, 4)
    c0, c1 = random_rgb(rng), random_rgb(rng)
    if kind == 0:
        period = rng.uniform(2.0, 20.0)
        w = 0.5 + 0.5 * np.sin(_ramp(rng, height, width) * np.float32(width * 2 * np.pi / period))
    elif kind == 1:
        period = rng.uniform(3.0, 24.0)
        xs = (np.arange(width) // period).astype(np.int32)
        ys = (np.arange(height) // period).astype(np.int32)[:, None]
        w = ((xs + ys) % 2).astype(np.float32)
    elif kind == 2:
        w = _smooth_noise(rng, height, width, int(rng.integers(4, 24)), 1)[..., 0]
    else:
        w = rng.random((height, width), dtype=np.float32)
        w = cv2.GaussianBlur(w, (0, 0), rng.uniform(0.3, 1.0))
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-6)
    return _blend(c0, c1, w)


def _draw_shapes(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Draw random filled shapes and lines into ``image`` (H, W, 3) float32 in place."""
    height, width = image.shape[:2]
    for _ in range(count):
        color = tuple(float(c) for c in random_rgb(rng))
        kind = rng.integers(0, 5)
        cx, cy = int(rng.integers(-20, width + 20)), int(rng.integers(-20, height + 20))
        size = int(rng.integers(6, max(width, height) // 3))
        if kind == 0:
            cv2.circle(image, (cx, cy), size // 2, color, -1, cv2.LINE_AA)
        elif kind == 1:
            box = cv2.boxPoints(((cx, cy), (size, int(rng.integers(4, size + 5))),
                                 float(rng.uniform(0, 180))))
            cv2.fillPoly(image, [np.round(box).astype(np.int32)], color, cv2.LINE_AA)
        elif kind == 2:
            pts = rng.normal(0.0, size / 2, size=(int(rng.integers(3, 7)), 2)) + (cx, cy)
            cv2.fillPoly(image, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
        elif kind == 3:
            end = (cx + int(rng.integers(-size, size)), cy + int(rng.integers(-size, size)))
            cv2.line(image, (cx, cy), end, color, int(rng.integers(1, 10)), cv2.LINE_AA)
        else:
            axes = (size // 2, int(rng.integers(2, size // 2 + 3)))
            cv2.ellipse(image, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, color, -1,
                        cv2.LINE_AA)


def make_background(rng: np.random.Generator, height: int, width: int,
                    cluttered: bool) -> np.ndarray:
    """A random background image.

    Args:
        rng: random source.
        height, width: image size.
        cluttered: False gives a plain colour or a smooth gradient; True adds textures,
            colour noise and many random shapes (some skin-coloured).

    Returns:
        (H, W, 3) float32 RGB in [0, 255].
    """
    if not cluttered:
        if rng.random() < 0.4:
            image = np.broadcast_to(random_rgb(rng), (height, width, 3)).astype(np.float32)
        else:
            # A linear ramp survives bilinear upsampling exactly: make it small.
            small = _gradient(rng, (height + 3) // 4, (width + 3) // 4)
            image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        return image

    # Textures are made at half resolution (4x less work) and upsampled; shapes are drawn
    # at full resolution so that edges stay sharp.
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    image = _gradient(rng, h2, w2)
    for _ in range(int(rng.integers(1, 4))):
        layer = _texture_patch(rng, h2, w2)
        # Blend each texture in under a random smooth mask so regions differ.
        mask = _smooth_noise(rng, h2, w2, int(rng.integers(2, 6)), 1)
        mask = np.clip((mask - rng.uniform(0.3, 0.7)) * rng.uniform(3.0, 12.0) + 0.5, 0, 1)
        image += mask * (layer - image)
    image *= 0.6 + 0.6 * _smooth_noise(rng, h2, w2, 3, 1)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    _draw_shapes(rng, image, int(rng.integers(5, 30)))
    sigma = rng.uniform(0.0, 2.5)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image.astype(np.float32, copy=False)


def background_depth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) float32 depth of a random tilted plane between 1.2 m and RHD's 5 m limit."""
    d0 = rng.uniform(1.2, 4.5)
    gu, gv = rng.uniform(-0.004, 0.004, 2)
    xs = (np.arange(width, dtype=np.float32) - width / 2) * np.float32(gu)
    ys = (np.arange(height, dtype=np.float32)[:, None] - height / 2) * np.float32(gv)
    return np.clip(np.float32(d0) + xs + ys, 1.0, RHD_DEPTH_MAX_M - 0.01).astype(np.float32)


# --- RHD depth encoding --------------------------------------------------------------------

def encode_depth_rhd(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB with depth_m = (R * 256 + G) / 65535 * 5."""
    q = np.round(np.clip(depth_m, 0.0, RHD_DEPTH_MAX_M) / RHD_DEPTH_MAX_M * 65535.0)
    q = q.astype(np.uint16)
    rgb = np.zeros(depth_m.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = q >> 8
    rgb[..., 1] = q & 0xFF
    return rgb


def decode_depth_rhd(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB depth image -> (H, W) float32 metres (RHD's formula)."""
    r = rgb[..., 0].astype(np.float32)
    g = rgb[..., 1].astype(np.float32)
    return (r * 256.0 + g) / 65535.0 * RHD_DEPTH_MAX_M

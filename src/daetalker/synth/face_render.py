"""Render the synthetic speaker: an analytic 3-D head ray-cast per pixel.

The head is a union of ellipsoids in head coordinates (cm; x right, y up,
z toward the viewer at rest): cranium, a hair shell cut along the hairline,
jaw (drops as the mouth opens), ears, and a nose made of a bridge and two wings. Every pixel's camera ray
(perspective pinhole) is intersected with each ellipsoid in closed form; the
nearest hit gives the head-frame point (for the albedo texture) and the
surface normal (for Lambert + specular lighting). Silhouettes are
anti-aliased from the ray's distance to each ellipsoid. A fixed neck cylinder,
a static background plate and a shirt overlay complete the frame.

Cost per frame is a few dozen numpy passes over the head's bounding box plus
one ``cv2.remap`` of the texture: about 10 ms per 256 px frame on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from daetalker.synth.face_texture import (
    Layout,
    TextureSpace,
    paint_base,
    paint_eyes,
    paint_hair,
    paint_mouth,
)
from daetalker.synth.speaker import Speaker

CAMERA_DISTANCE_CM = 80.0
HEAD_FRACTION = 0.5  # crown-to-chin height over the frame height
PIVOT = np.array([0.0, -8.5, -2.0])  # neck pivot in head coordinates, cm
KEY_LIGHT = np.array([-0.45, 0.55, 0.75])
FILL_LIGHT = np.array([0.7, 0.0, 0.7])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation (3, 3) = Ry(yaw) Rx(-pitch) Rz(roll); degrees (motion.POSE_CONVENTION)."""
    y, p, r = np.deg2rad([yaw, -pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def _rx(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ry(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@dataclass
class Ellipsoid:
    centre: np.ndarray  # (3,) head frame, cm
    axes: np.ndarray  # (3,) semi-axes, cm
    rot: np.ndarray  # (3, 3) local -> head frame
    kind: str  # 'skin', 'ear', 'hair'
    clip: tuple[float, float] | None = None  # keep hits with y >= a + b z (head frame)


@dataclass
class FrameState:
    """Everything that changes from frame to frame."""

    yaw: float
    pitch: float
    roll: float
    opening: float  # 0..1
    spread: float  # -1..1
    blink: float  # 0..1
    gaze: tuple[float, float]
    sway: tuple[float, float, float]  # cm
    teeth: float = 0.0  # 0..1, upper teeth shown even with the lips nearly together (f, v, s)


class FaceRenderer:
    """Draws one speaker at one frame size; build once (textures, plate), call per frame."""

    def __init__(self, speaker: Speaker, size: int) -> None:
        self.sp, self.size = speaker, size
        self.lay = Layout.of(speaker)
        d = CAMERA_DISTANCE_CM
        self.focal = HEAD_FRACTION * size * d / 22.0  # px; head is ~22 cm crown to chin
        self.cx, self.cy = size / 2.0, 0.42 * size
        px_per_cm = self.focal / d
        self.ts = TextureSpace(texel_cm=1.0 / (2.0 * px_per_cm))  # 2x oversampled texture
        self.base_tex = np.concatenate(
            [paint_base(speaker, self.lay, self.ts), paint_hair(speaker, self.ts)], axis=1
        )
        self.skin = np.asarray(speaker.skin, np.float32)
        # ray direction per pixel: d = (X, Y, -1) from the camera at (0, 0, D)
        u = (np.arange(size, dtype=np.float32) + 0.5 - self.cx) / self.focal
        v = -(np.arange(size, dtype=np.float32) + 0.5 - self.cy) / self.focal
        self.X, self.Y = np.meshgrid(u, v)  # (H, W) each
        self.light = KEY_LIGHT / np.linalg.norm(KEY_LIGHT)
        self.fill = FILL_LIGHT / np.linalg.norm(FILL_LIGHT)
        self.half = (self.light + np.array([0, 0, 1.0])) / np.linalg.norm(self.light + [0, 0, 1.0])
        rng = np.random.default_rng(speaker.texture_seed + 1)
        self.plate = _background(speaker, size, rng)
        # the neck belongs to the body, which does not move: paint it into the plate once
        _, cover_n, rgb_n = self._neck(self.X, self.Y)
        self.plate += (rgb_n - self.plate) * cover_n[..., None]
        self.shirt_rgb, self.shirt_a, self.shirt_rows = _shirt(speaker, size, self._project_world, rng)

    # -------------------------------------------------------------- geometry
    def _primitives(self, opening: float) -> tuple[list[Ellipsoid], list[Ellipsoid]]:
        sp = self.sp
        drop = 0.9 * opening  # the jaw swings down as the mouth opens
        base = [
            Ellipsoid(np.array([0.0, 1.6, -1.6]), np.array([7.3, 9.7, 9.8]), np.eye(3), "skin"),  # cranium
            Ellipsoid(np.array([0.0, -3.3 - 0.5 * drop, 0.9]),
                      np.array([6.0 * sp.face_width, 7.1 * sp.jaw_length + 0.5 * drop, 7.2]), _rx(-8), "skin"),
        ]
        for sx in (-1, 1):
            base.append(Ellipsoid(np.array([sx * 7.25, 0.7, -1.2]), np.array([0.8, 2.8, 1.5]),
                                  _ry(sx * 25.0), "ear"))
        # hair volume: a shell over the cranium, cut by the plane y = a + 0.55 z: hairline in front, nape behind
        a = self.lay.hairline + 0.3 - 0.55 * 8.0
        base.append(Ellipsoid(np.array([0.0, 2.1, -1.9]), np.array([7.75, 9.9, 10.1]), np.eye(3),
                              "hair", clip=(a, 0.55)))
        n = sp.nose_size
        nose = [
            Ellipsoid(np.array([0.0, -0.7, 8.05]), np.array([0.85, 2.6 * n, 1.55 * n]), _rx(-24), "skin"),
        ]
        for sx in (-1, 1):
            nose.append(Ellipsoid(np.array([sx * 0.8, -2.3, 8.1]), np.array([0.58, 0.5, 0.62]),
                                  _ry(sx * 20.0), "skin"))
        return base, nose

    def _project_world(self, p: np.ndarray) -> np.ndarray:
        """World points (..., 3) cm -> pixels (..., 2)."""
        z = CAMERA_DISTANCE_CM - p[..., 2]
        return np.stack([self.cx + self.focal * p[..., 0] / z, self.cy - self.focal * p[..., 1] / z], -1)

    # -------------------------------------------------------------- ray casting
    def _cast(self, prims: list[Ellipsoid], R: np.ndarray, origin_h: np.ndarray,
              X: np.ndarray, Y: np.ndarray):
        """Hits of rays through (X, Y): nearest t, coverage alpha, index of the nearest, t per primitive."""
        px_scale = self.focal / CAMERA_DISTANCE_CM
        flip = np.diag([1.0, 1.0, -1.0])  # d = (X, Y, -1)
        Dh = R.T @ flip  # ray direction in head frame = Dh @ (X, Y, 1)
        XX, XY, YY = X * X, X * Y, Y * Y
        best_t = np.full(X.shape, np.inf, np.float32)
        alpha = np.zeros(X.shape, np.float32)
        index = np.full(X.shape, -1, np.int8)
        t_all = []
        for k, e in enumerate(prims):
            inv = np.diag(1.0 / e.axes) @ e.rot.T  # head -> unit-sphere coordinates
            M = inv @ Dh  # ray direction in sphere coords = M @ (X, Y, 1)
            o = inv @ (origin_h - e.centre)
            G = (M.T @ M).tolist()  # python floats keep the float32 arrays float32
            A = (G[0][0] * XX + 2 * G[0][1] * XY + G[1][1] * YY
                 + 2 * G[0][2] * X + 2 * G[1][2] * Y + G[2][2])
            b = (o @ M).tolist()  # half of B
            B = b[0] * X + b[1] * Y + b[2]
            w = (B * B) / A - float(o @ o - 1.0)  # = 1 - (ray distance to centre)^2 in sphere units
            cover = np.clip(0.5 + w * (0.5 * float(np.sqrt(e.axes[0] * e.axes[1])) * px_scale), 0, 1)
            t = (-B - np.sqrt(np.maximum(w, 0.0) * A)) / A
            if e.clip is not None:
                d1, d2, oh = Dh[1].tolist(), Dh[2].tolist(), origin_h.tolist()
                yh = oh[1] + t * (d1[0] * X + d1[1] * Y + d1[2])
                zh = oh[2] + t * (d2[0] * X + d2[1] * Y + d2[2])
                cover = np.where(yh >= e.clip[0] + e.clip[1] * zh, cover, 0.0)
            t = np.where(cover > 0, t, np.inf).astype(np.float32)
            nearer = t < best_t
            best_t = np.where(nearer, t, best_t)
            index = np.where(nearer, np.int8(k), index)
            alpha = np.maximum(alpha, cover)
            t_all.append(t)
        return best_t, alpha, index, t_all

    def _shade(self, prims: list[Ellipsoid], R: np.ndarray, origin_h: np.ndarray, t: np.ndarray,
               index: np.ndarray, t_all: list[np.ndarray], X: np.ndarray, Y: np.ndarray,
               tex: np.ndarray) -> np.ndarray:
        """Colour (h, w, 3) of the nearest hits: texture albedo x lighting."""
        Dh = (R.T @ np.diag([1.0, 1.0, -1.0])).tolist()  # ray dir in head frame = Dh @ (X, Y, 1)
        oh = origin_h.tolist()
        tt = np.where(np.isfinite(t), t, np.float32(CAMERA_DISTANCE_CM))
        ph = [oh[i] + tt * (Dh[i][0] * X + Dh[i][1] * Y + Dh[i][2]) for i in range(3)]
        n = _blend_normals(prims, R, ph, t, index, t_all, X)
        albedo = self._albedo(prims, index, ph, tex)
        return self._light(albedo, n)

    def _albedo(self, prims: list[Ellipsoid], index: np.ndarray, ph: list[np.ndarray],
                tex: np.ndarray) -> np.ndarray:
        """Albedo (h, w, 3) at the head-frame hit points ``ph`` (3 x (h, w)): texture, hair, ears."""
        ts = self.ts
        hair_kind = np.zeros(index.shape, bool)
        ear = np.zeros(index.shape, bool)
        for k, e in enumerate(prims):
            if e.kind == "hair":
                hair_kind |= index == k
            elif e.kind == "ear":
                ear |= index == k
        # the texture holds the face (left half) and hair strands (right half)
        mapx = ((ph[0] - ts.x0) / ts.texel + hair_kind * ts.width).astype(np.float32)
        mapy = ((ts.y0 - ph[1]) / ts.texel).astype(np.float32)
        albedo = cv2.remap(tex, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = np.clip((-ph[2] - 2.5) / 1.5, 0, 1) * ~hair_kind  # back of the skull is hair too
        if back.any():
            albedo += (np.asarray(self.sp.hair, np.float32) - albedo) * back[..., None]
        if ear.any():
            albedo[ear] = self.skin * np.array([0.97, 0.86, 0.84], np.float32)
        return albedo

    def _light(self, albedo: np.ndarray, n: list[np.ndarray]) -> np.ndarray:
        """Lit colour (h, w, 3) from albedo (h, w, 3) and unit camera-frame normals ``n`` (3 x (h, w))."""
        L, F, H = self.light.tolist(), self.fill.tolist(), self.half.tolist()
        ndl = n[0] * L[0] + n[1] * L[1] + n[2] * L[2]
        fill = n[0] * F[0] + n[1] * F[1] + n[2] * F[2]
        ndh = n[0] * H[0] + n[1] * H[1] + n[2] * H[2]
        diffuse = 0.30 + 0.72 * np.maximum(ndl, 0) + 0.22 * np.maximum(fill, 0)
        diffuse *= 0.8 + 0.2 * np.clip(n[2], 0, 1)  # grazing surfaces catch less light
        spec = 0.10 * np.maximum(ndh, 0) ** 24
        rgb = albedo * diffuse[..., None] + spec[..., None]
        # warm bounce on the shadow side (subsurface scattering, crudely)
        rgb += (0.06 * np.clip(-ndl, 0, 1))[..., None] * self.skin * np.array([1.0, 0.5, 0.4], np.float32)
        return rgb

    def _neck(self, X: np.ndarray, Y: np.ndarray):
        """Fixed vertical elliptic cylinder (x radius 5.3, z radius 4.6) behind the jaw."""
        D, cz, ax, az = CAMERA_DISTANCE_CM, -1.8, 5.3, 4.6
        # x = t X, z = D - t: ((t X)/ax)^2 + ((D - t - cz)/az)^2 = 1
        a = (X / ax) ** 2 + 1.0 / az**2
        b = -(D - cz) / az**2
        c = ((D - cz) / az) ** 2 - 1.0
        w = b * b - a * c
        cover = np.clip(0.5 + w / a * 0.5 * ax * self.focal / D, 0, 1)  # w / a = 1 - r_min^2
        t = (-b - np.sqrt(np.maximum(w, 0))) / a
        y = t * Y
        cover *= np.clip((-4.0 - y), 0, 1)  # neck ends inside the head
        x, z = t * X, D - t
        nx, nz = x / ax**2, (z - cz) / az**2
        nn = np.sqrt(nx**2 + nz**2) + 1e-6
        nx, nz = nx / nn, nz / nn
        ndl = np.maximum(nx * self.light[0] + nz * self.light[2], 0)
        shade = 0.3 + 0.65 * ndl + 0.15 * np.maximum(nx * self.fill[0] + nz * self.fill[2], 0)
        shadow = 1.0 - 0.45 * np.clip((y + 15.0) / 5.0, 0, 1)  # under the chin
        rgb = (self.skin * 0.94)[None, None, :] * (shade * shadow)[..., None]
        return t, cover, rgb

    # -------------------------------------------------------------- frame
    def render(self, st: FrameState) -> np.ndarray:
        """One frame (H, W, 3) uint8 RGB."""
        R = rotation(st.yaw, st.pitch, st.roll)
        T = np.asarray(st.sway, np.float64)
        cam = np.array([0.0, 0.0, CAMERA_DISTANCE_CM])
        origin_h = R.T @ (cam - PIVOT - T) + PIVOT  # camera position in head coordinates
        tex = self.base_tex.copy()
        paint_eyes(tex, self.sp, self.lay, self.ts, st.blink, st.gaze)
        paint_mouth(tex, self.sp, self.lay, self.ts, st.opening, st.spread, st.teeth)
        base, nose = self._primitives(st.opening)

        # work only inside the image box of the head's bounding box (corners projected)
        r0, r1, c0, c1 = self._head_box(R, T)
        X, Y = self.X[r0:r1, c0:c1], self.Y[r0:r1, c0:c1]

        t, alpha, index, t_all = self._cast(base, R, origin_h, X, Y)
        rgb = self._shade(base, R, origin_h, t, index, t_all, X, Y, tex)

        # nose over the face, in its own small box, blended by its coverage
        nc = R @ (np.array([0.0, -1.5, 9.0]) - PIVOT) + PIVOT + T
        a0, a1, b0, b1 = self._box(nc, 3.6)
        a0, a1 = max(a0, r0) - r0, min(a1, r1) - r0
        b0, b1 = max(b0, c0) - c0, min(b1, c1) - c0
        if a1 > a0 and b1 > b0:
            Xn, Yn = X[a0:a1, b0:b1], Y[a0:a1, b0:b1]
            t_n, a_n, i_n, tn_all = self._cast(nose, R, origin_h, Xn, Yn)
            rgb_nose = self._shade(nose, R, origin_h, t_n, i_n, tn_all, Xn, Yn, tex)
            a_n = np.where(t_n < t[a0:a1, b0:b1] + 0.3, a_n, 0.0)
            sub = rgb[a0:a1, b0:b1]
            sub += (rgb_nose - sub) * a_n[..., None]

        # layers back to front: wall and neck (the plate; the neck is always behind the jaw), head, shirt
        frame = self.plate.copy()
        roi = frame[r0:r1, c0:c1]
        roi += (rgb - roi) * alpha[..., None]
        s0 = self.shirt_rows[0]
        frame[s0:] += (self.shirt_rgb - frame[s0:]) * self.shirt_a[..., None]
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _head_box(self, R: np.ndarray, T: np.ndarray) -> tuple[int, int, int, int]:
        """Rows and columns (r0, r1, c0, c1) covering the head: hair, ears, open jaw."""
        corners = np.array(np.meshgrid([-8.6, 8.6], [-12.0, 12.6], [-12.2, 10.8], indexing="ij")).reshape(3, -1).T
        uv = self._project_world((corners - PIVOT) @ R.T + PIVOT + T)  # (8, 2) px
        lo = np.floor(uv.min(0)) - 2
        hi = np.ceil(uv.max(0)) + 3
        c0, r0 = (int(v) for v in np.clip(lo, 0, self.size))
        c1, r1 = (int(v) for v in np.clip(hi, 0, self.size))
        return r0, r1, c0, c1

    def _box(self, centre_w: np.ndarray, radius: float) -> tuple[int, int, int, int]:
        uv = self._project_world(centre_w)
        r_px = radius * self.focal / (CAMERA_DISTANCE_CM - centre_w[2] - radius) + 2
        c0 = int(np.clip(uv[0] - r_px, 0, self.size))
        c1 = int(np.clip(uv[0] + r_px + 1, 0, self.size))
        r0 = int(np.clip(uv[1] - r_px, 0, self.size))
        r1 = int(np.clip(uv[1] + r_px + 1, 0, self.size))
        return r0, r1, c0, c1


def _blend_normals(prims: list[Ellipsoid], R: np.ndarray, ph: list[np.ndarray], t: np.ndarray,
                   index: np.ndarray, t_all: list[np.ndarray], X: np.ndarray) -> list[np.ndarray]:
    """Unit camera-frame normals (3 x (h, w)) at the hits ``ph``, soft-blended across skin seams."""
    # camera-frame normal = G (p - c): the ellipsoid's gradient, rotated
    grads = [(R @ e.rot @ np.diag(1.0 / e.axes**2) @ e.rot.T).tolist() for e in prims]
    # smooth union of the skin ellipsoids: near a seam (hits within a few cm) the normal is a
    # soft-min blend of the surfaces' normals, so creases shade like flesh, not like plates
    skin = [k for k, e in enumerate(prims) if e.kind == "skin"]
    n = [np.zeros_like(X) for _ in range(3)]
    wsum = np.zeros_like(X)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where nothing is hit
        is_skin = np.isin(index, skin)
        for k in range(len(prims)):
            if k in skin:
                sel = is_skin & (t_all[k] - t < 2.5)
                w_all = np.exp(-(t_all[k] - t) / 0.7)
            else:
                sel = index == k
                w_all = None
            if not sel.any():
                continue
            nk = _surface_normal(prims[k], grads[k], ph, sel)
            lk = np.sqrt(nk[0] ** 2 + nk[1] ** 2 + nk[2] ** 2) + 1e-6
            w = w_all[sel] if w_all is not None else 1.0
            for i in range(3):
                n[i][sel] += w * nk[i] / lk
            wsum[sel] += w
    norm = np.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2) + 1e-6
    return [c / norm for c in n]


def _surface_normal(e: Ellipsoid, G: list[list[float]], ph: list[np.ndarray],
                    sel: np.ndarray) -> list[np.ndarray]:
    """Unnormalised camera-frame normal G (p - c) of ``e`` (3 x (m,)) at the hit points ``ph[i][sel]``."""
    c = e.centre.tolist()
    q = [ph[i][sel] - c[i] for i in range(3)]
    return [G[i][0] * q[0] + G[i][1] * q[1] + G[i][2] * q[2] for i in range(3)]


def _background(sp: Speaker, size: int, rng: np.random.Generator) -> np.ndarray:
    """A defocused room wall: light falloff, blotches, a few soft rectangles, grain. (H, W, 3) float32."""
    wall = np.asarray(sp.wall, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 1.05 - 0.35 * np.sqrt((xx - 0.25) ** 2 + (yy - 0.1) ** 2)
    img = wall[None, None, :] * light[..., None]
    for _ in range(int(rng.integers(2, 5))):  # furniture, frames, a door edge
        x0, y0 = rng.uniform(-0.1, 0.9, 2)
        w, h = rng.uniform(0.08, 0.4, 2)
        col = np.clip(wall * rng.uniform(0.55, 1.25, 3), 0, 1)
        mask = ((xx > x0) & (xx < x0 + w) & (yy > y0) & (yy < y0 + h)).astype(np.float32)
        img += (col - img) * mask[..., None] * rng.uniform(0.5, 0.9)
    blotch = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    img *= (1.0 + 0.05 * blotch)[..., None]
    img = cv2.GaussianBlur(img, (0, 0), max(size / 180.0, 0.6))  # out of focus
    grain = rng.standard_normal((size, size, 1)).astype(np.float32)
    img *= 1.0 + 0.015 * grain
    return np.clip(img, 0, 1).astype(np.float32)


def _shirt(sp: Speaker, size: int, project, rng: np.random.Generator):
    """Shoulders and a round neckline, static: colour (h, W, 3), alpha (h, W), rows (r0, H)."""
    # outline in world cm on the plane z = -2 (shoulders sit behind the chin)
    xs = np.linspace(-32, 32, 257)
    ax = np.abs(xs)
    neckline = -15.0 - 2.4 * np.clip(1 - (xs / 5.4) ** 2, 0, 1) ** 0.5
    # trapezius slope from the neck to the shoulder point, then the arm falls away
    slope = -15.2 - 5.0 * np.clip((ax - 5.2) / 13.5, 0, 1) ** 1.6
    arm = -20.2 - 2.5 * np.maximum(ax - 18.7, 0) ** 1.3
    top = np.where(ax < 5.4, np.minimum(neckline, slope), np.where(ax < 18.7, slope, arm))
    pts_top = project(np.stack([xs, top, np.full_like(xs, -2.0)], -1))
    poly = np.concatenate([pts_top, [[size + 10, size + 10], [-10, size + 10]]])
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    alpha = mask.astype(np.float32) / 255.0
    rows = np.nonzero(alpha.max(1) > 0)[0]
    r0 = int(rows[0]) if len(rows) else size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 0.75 + 0.3 * (1 - xx) - 0.25 * (yy - 0.8)
    folds = cv2.resize(rng.standard_normal((4, 8)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    rgb = np.asarray(sp.shirt, np.float32)[None, None, :] * (shade * (1 + 0.06 * folds))[..., None]
    # collar band along the neckline
    collar = np.zeros((size, size), np.uint8)
    band = max(int(round(size / 90)), 1)
    cv2.polylines(collar, [np.round(pts_top[ax < 6.2] * 16).astype(np.int32)], False, 255,
                  band, cv2.LINE_AA, shift=4)
    rgb *= (1.0 - 0.3 * collar.astype(np.float32) / 255.0)[..., None]
    return rgb[r0:].astype(np.float32), alpha[r0:], (r0, size)

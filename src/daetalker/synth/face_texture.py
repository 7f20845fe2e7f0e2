"""The face's albedo texture, painted in head coordinates (cm, frontal projection).

A texel at (x, y) colours every surface point of the head whose head-frame
x, y are those (a frontal photo projected onto the 3-D head), so features
painted here move and foreshorten with the head. The static part (skin,
brows, hair, nostrils) is painted once; eyes (blinks, gaze) and lips
(opening, spread, teeth) are repainted into a copy for every frame, on small regions.
All shapes are drawn analytically with one-texel soft edges (no aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from daetalker.synth.speaker import Speaker


@dataclass(frozen=True)
class Layout:
    """Where features sit on the head, cm, head frame (x right, y up)."""

    eye_x: float = 3.1  # half distance between eye centres
    eye_y: float = 1.5
    eye_half_w: float = 1.35
    eye_up: float = 0.55  # upper lid height above the eye line, open
    eye_down: float = 0.38
    iris_r: float = 0.56
    brow_y: float = 3.25
    nose_bottom_y: float = -2.8
    mouth_y: float = -5.1
    mouth_w: float = 2.3  # half width, closed
    max_gap: float = 3.0  # inner-lip distance at opening 1
    hairline: float = 6.8

    @staticmethod
    def of(sp: Speaker) -> "Layout":
        return Layout(eye_x=sp.eye_spacing, mouth_w=sp.mouth_width, hairline=sp.hairline)


class TextureSpace:
    """Maps head cm to texel indices: col = (x - x0) / texel, row = (y0 - y) / texel."""

    x0, x1, y0, y1 = -10.0, 10.0, 14.0, -13.0

    def __init__(self, texel_cm: float) -> None:
        self.texel = texel_cm
        self.width = int(np.ceil((self.x1 - self.x0) / texel_cm))
        self.height = int(np.ceil((self.y0 - self.y1) / texel_cm))

    def region(self, xa: float, xb: float, ya: float, yb: float):
        """Texel slices covering x in [xa, xb], y in [ya, yb] and their cm grids (h, w)."""
        c0 = max(int(np.floor((xa - self.x0) / self.texel)), 0)
        c1 = min(int(np.ceil((xb - self.x0) / self.texel)) + 1, self.width)
        r0 = max(int(np.floor((self.y0 - yb) / self.texel)), 0)
        r1 = min(int(np.ceil((self.y0 - ya) / self.texel)) + 1, self.height)
        xs = (self.x0 + (np.arange(c0, c1) + 0.0) * self.texel).astype(np.float32)
        ys = (self.y0 - (np.arange(r0, r1) + 0.0) * self.texel).astype(np.float32)
        return (slice(r0, r1), slice(c0, c1)), xs[None, :], ys[:, None]

    def soft(self, signed_cm: np.ndarray) -> np.ndarray:
        """Coverage from a signed distance in cm (>0 inside), one-texel ramp."""
        return np.clip(signed_cm / self.texel + 0.5, 0.0, 1.0)


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise in about [-1, 1]: random grid upsampled bicubically."""
    g = rng.standard_normal((cells[0] + 3, cells[1] + 3)).astype(np.float32)
    big = cv2.resize(g, (shape[1] + 0, shape[0] + 0), interpolation=cv2.INTER_CUBIC)
    return big / max(float(np.abs(big).max()), 1e-6)


def _blend(dst: np.ndarray, color, alpha: np.ndarray) -> None:
    """dst (h, w, 3) <- dst * (1 - a) + color * a, color (3,) or (h, w, 3)."""
    a = alpha[..., None]
    dst *= 1.0 - a
    dst += np.asarray(color, np.float32) * a


def paint_base(sp: Speaker, lay: Layout, ts: TextureSpace) -> np.ndarray:
    """Static albedo (H, W, 3) float32: skin, shading cues, brows, hair, nostrils."""
    rng = np.random.default_rng(sp.texture_seed)
    h, w = ts.height, ts.width
    (rs, cs), X, Y = ts.region(ts.x0, ts.x1, ts.y1, ts.y0)
    X, Y = np.broadcast_to(X, (h, w)), np.broadcast_to(Y, (h, w))
    skin = np.asarray(sp.skin, np.float32)
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = skin
    # blotches and pores: a model learning this face needs texture, not flat paint
    tex *= (1.0 + 0.05 * _noise(rng, (h, w), (6, 5)))[..., None]
    pores = rng.standard_normal((h, w)).astype(np.float32)
    tex *= (1.0 + 0.025 * cv2.GaussianBlur(pores, (0, 0), 0.7) / 0.35)[..., None]

    def blob(cx, cy, rx, ry):
        return np.exp(-(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2))

    red = np.array([0.95, 0.55, 0.55], np.float32) * skin
    for sx in (-1, 1):  # cheeks
        _blend(tex, red, 0.22 * blob(sx * 3.4, -1.6, 1.8, 1.4))
    _blend(tex, red, 0.08 * blob(0.0, -2.2, 0.9, 0.7))  # nose tip
    # eye sockets and the shadow under the brow ridge
    for sx in (-1, 1):
        tex *= (1.0 - 0.22 * blob(sx * lay.eye_x, lay.eye_y + 0.2, 1.9, 1.2))[..., None]
        tex *= (1.0 - 0.12 * blob(sx * (lay.eye_x - 1.2), lay.eye_y - 0.2, 0.6, 0.9))[..., None]
    # nose sides, nasolabial folds, under-lip and chin shadows
    for sx in (-1, 1):
        tex *= (1.0 - 0.10 * blob(sx * 1.0, 0.0, 0.4, 1.6))[..., None]
        fold_x = sx * (1.5 + 0.35 * (lay.nose_bottom_y - Y))
        fold = np.exp(-(((X - fold_x) / 0.22) ** 2)) * ((Y < lay.nose_bottom_y + 0.3) & (Y > lay.mouth_y - 0.6))
        tex *= (1.0 - 0.12 * fold)[..., None]
    tex *= (1.0 - 0.15 * blob(0.0, lay.mouth_y - 1.25, 1.3, 0.35))[..., None]
    tex *= (1.0 - 0.10 * blob(0.0, lay.nose_bottom_y - 0.15, 0.9, 0.25))[..., None]
    # nostrils
    for sx in (-1, 1):
        d = np.sqrt(((X - sx * 0.62) / 0.36) ** 2 + ((Y - (lay.nose_bottom_y + 0.12)) / 0.17) ** 2)
        _blend(tex, skin * 0.25, ts.soft((1.0 - d) * 0.17) * 0.9)
    # eyebrows: tapered arcs
    hair = np.asarray(sp.hair, np.float32)
    brow_col = hair * 0.8 + 0.02
    for sx in (-1, 1):
        u = (X * sx - (lay.eye_x - 1.45)) / 2.9  # 0 at the inner end, 1 at the outer end
        centre = lay.brow_y + 0.45 * np.sin(np.pi * np.clip(u, 0, 1) * 0.85) - 0.15
        thick = sp.brow_thickness * (1.0 - 0.55 * np.clip(u, 0, 1))
        inside = np.minimum(thick / 2 - np.abs(Y - centre), np.minimum(u, 1 - u) * 2.9)
        strands = 0.8 + 0.2 * _noise(rng, (h, w), (8, 40))
        _blend(tex, brow_col, ts.soft(inside) * strands)
    # hair above the hairline (receding at the temples) and on the sides
    top = lay.hairline - 0.9 * np.clip((np.abs(X) - 2.5) / 3.0, 0, 1) ** 2 + 0.25 * np.cos(X * 1.3)
    side = np.minimum(np.abs(X) - 6.0, Y - 2.2 + 0.4 * (np.abs(X) - 6.0))  # temples, above the ears
    hair_in = np.maximum(Y - top, side)
    _blend(tex, paint_hair(sp, ts) * 0.85, np.clip(hair_in / 0.5 + 0.5, 0, 1))
    return np.clip(tex, 0.0, 1.0)


def paint_hair(sp: Speaker, ts: TextureSpace) -> np.ndarray:
    """Hair albedo (H, W, 3): strands running top to bottom, with sheen bands."""
    rng = np.random.default_rng(sp.texture_seed + 7)
    shape = (ts.height, ts.width)
    strands = 1.0 + 0.2 * _noise(rng, shape, (3, 70)) + 0.1 * _noise(rng, shape, (12, 140))
    sheen = 1.0 + 0.12 * _noise(rng, shape, (5, 4))
    return np.clip(np.asarray(sp.hair, np.float32)[None, None, :] * (strands * sheen)[..., None], 0, 1)


def paint_eyes(tex: np.ndarray, sp: Speaker, lay: Layout, ts: TextureSpace,
               blink: float, gaze: tuple[float, float]) -> None:
    """Sclera, iris, pupil, catchlight, lids and lashes, in place on ``tex``."""
    iris = np.asarray(sp.iris, np.float32)
    for sx in (-1, 1):
        ex, ey = sx * lay.eye_x, lay.eye_y
        (rs, cs), X, Y = ts.region(ex - lay.eye_half_w - 0.3, ex + lay.eye_half_w + 0.3,
                                   ey - lay.eye_down - 0.3, ey + lay.eye_up + 0.6)
        roi = tex[rs, cs]
        u = np.clip((X - ex) / lay.eye_half_w, -1.0, 1.0)  # -1..1 across the eye
        # inner corner (toward the nose) sits lower and is rounder than the outer one
        tilt = 0.08 * (u * sx)
        upper = ey + tilt + lay.eye_up * (1 - u**2) ** 0.8 * (1 + 0.15 * u * sx * -1)
        lower = ey + tilt - lay.eye_down * (1 - u**2) ** 1.1
        lid = lower + (upper - lower) * (1.0 - blink) + 0.02
        inside_x = lay.eye_half_w - np.abs(X - ex)
        opening = ts.soft(np.minimum(np.minimum(lid - Y, Y - lower), inside_x))
        eye = np.empty(roi.shape, np.float32)
        eye[:] = np.array([0.93, 0.91, 0.88], np.float32)
        corner = np.exp(-((np.abs(u) - 1.0) / 0.35) ** 2)
        eye *= (1.0 - 0.25 * corner)[..., None]
        icx = ex + gaze[0] * lay.iris_r
        icy = ey + 0.04 + gaze[1] * lay.iris_r * 0.6
        r = np.sqrt((X - icx) ** 2 + (Y - icy) ** 2)
        ring = np.clip((r / lay.iris_r - 0.7) / 0.3, 0, 1)  # darker limbal ring
        iris_col = iris[None, None, :] * (1.0 - 0.5 * ring[..., None]) * (0.85 + 0.3 * (Y > icy)[..., None])
        _blend(eye, iris_col, ts.soft(lay.iris_r - r))
        _blend(eye, np.array([0.03, 0.03, 0.03], np.float32), ts.soft(0.22 - r))
        cr = np.sqrt((X - icx + 0.17) ** 2 + (Y - icy - 0.17) ** 2)
        _blend(eye, np.array([1.0, 1.0, 1.0], np.float32), ts.soft(0.09 - cr) * 0.9)
        # shadow of the upper lid on the eyeball
        eye *= (1.0 - 0.35 * np.clip(1.0 - (lid - Y) / 0.3, 0, 1))[..., None]
        _blend(roi, eye, opening)
        # lashes along the lid edge (thicker outside), lower lash line, lid crease
        lash_w = 0.06 + 0.05 * np.clip(u * sx, 0, 1) + 0.03 * blink
        lash = ts.soft(np.minimum(lash_w - np.abs(Y - lid), inside_x + 0.1))
        _blend(roi, np.asarray(sp.hair, np.float32) * 0.4 + 0.02, lash * 0.95)
        low = ts.soft(np.minimum(0.035 - np.abs(Y - lower), inside_x))
        _blend(roi, np.asarray(sp.skin, np.float32) * 0.45, low * 0.6)
        crease_y = upper + 0.32 - 0.1 * blink
        crease = ts.soft(np.minimum(0.05 - np.abs(Y - crease_y), inside_x - 0.15))
        _blend(roi, np.asarray(sp.skin, np.float32) * 0.6, crease * 0.5)


def mouth_curves(lay: Layout, opening: float, spread: float, X: np.ndarray):
    """Upper/lower, outer/inner lip contours y(x) for one mouth state (cm)."""
    hw = lay.mouth_w * (1.0 + (0.12 if spread > 0 else 0.26) * spread - 0.06 * opening)
    gap = opening * lay.max_gap
    u = np.clip(X / hw, -1.0, 1.0)
    edge = np.clip(1.0 - u**2, 0.0, 1.0)
    c_in = edge**0.7
    y_ui = lay.mouth_y + 0.25 * gap * c_in
    y_li = lay.mouth_y - 0.75 * gap * c_in
    pout = 1.0 + 0.3 * max(0.0, -spread)
    bow = -0.10 * np.exp(-((X / 0.3) ** 2)) + 0.07 * np.exp(-(((np.abs(X) - 0.55) / 0.35) ** 2))
    y_uo = y_ui + (0.68 * pout * edge**0.45 + bow * edge) - 0.02
    y_lo = y_li - 0.85 * pout * edge**0.5 + 0.02
    return hw, y_uo, y_ui, y_li, y_lo


def paint_mouth(tex: np.ndarray, sp: Speaker, lay: Layout, ts: TextureSpace,
                opening: float, spread: float, teeth: float = 0.0) -> None:
    """Lips, inner mouth, teeth and tongue for one mouth state, in place on ``tex``."""
    (rs, cs), X, Y = ts.region(-lay.mouth_w * 1.3 - 0.4, lay.mouth_w * 1.3 + 0.4,
                               lay.mouth_y - lay.max_gap - 1.2, lay.mouth_y + 1.0)
    roi = tex[rs, cs]
    hw, y_uo, y_ui, y_li, y_lo = mouth_curves(lay, opening, spread, X)
    inside_x = hw - np.abs(X)
    lips = np.asarray(sp.lips, np.float32)
    skin = np.asarray(sp.skin, np.float32)
    # soft shadow ring around the lips and dark corners
    corner = np.exp(-(((np.abs(X) - hw) / 0.25) ** 2 + ((Y - lay.mouth_y) / 0.25) ** 2))
    roi *= (1.0 - 0.3 * corner)[..., None]
    upper = ts.soft(np.minimum(np.minimum(y_uo - Y, Y - y_ui + 0.02), inside_x))
    lower = ts.soft(np.minimum(np.minimum(Y - y_lo, y_li - Y + 0.02), inside_x))
    # lower lip catches the light (lighter toward its centre, a moist highlight), upper lip is in shade
    mid_l = (y_li + y_lo) / 2
    shade_l = 1.0 + 0.25 * np.clip(1.0 - np.abs(Y - mid_l) / 0.4, 0, 1)
    _blend(roi, lips * 0.86, upper)
    _blend(roi, lips[None, None, :] * shade_l[..., None], lower)
    sheen = np.exp(-(((Y - (mid_l + 0.12)) / 0.09) ** 2) - (X / (0.45 * hw)) ** 2) * lower
    _blend(roi, np.array([1.0, 0.92, 0.9], np.float32), 0.3 * sheen)
    interior = ts.soft(np.minimum(np.minimum(y_ui - Y, Y - y_li), inside_x - 0.1))
    if opening > 0.01:
        # the inside is much darker than the lips: the inner lip contour is a strong edge
        inner = np.empty(roi.shape, np.float32)
        inner[:] = np.array([0.13, 0.03, 0.04], np.float32)
        gap = max(float(y_ui.max() - y_li.min()), 1e-3)
        back = np.exp(-((X / (0.6 * hw)) ** 2) - ((Y - (y_ui + y_li) / 2) / (0.4 * gap)) ** 2)
        inner *= (1.0 - 0.5 * back)[..., None]
        # tongue low in the mouth, kept off the lower lip by a dark band
        tongue = ts.soft(0.2 * gap - np.abs(Y - (y_li + 0.3 + 0.25 * gap)) - 0.35 * np.abs(X) / hw)
        _blend(inner, np.array([0.5, 0.2, 0.2], np.float32) * skin / skin.max(), 0.6 * tongue)
        # teeth show once the lips are well apart, or when the viseme bares them (f, v, s)
        show = max(float(np.clip((opening - 0.2) / 0.2, 0, 1)), teeth)
        teeth_up = ts.soft(np.minimum(0.22 - (y_ui - Y), inside_x - 0.6)) * show
        _blend(inner, np.array([0.82, 0.8, 0.74], np.float32), teeth_up)
        teeth_lo = ts.soft(np.minimum(0.12 - (Y - y_li), inside_x - 0.9)) * np.clip(opening * 2 - 1.2, 0, 1)
        _blend(inner, np.array([0.7, 0.68, 0.63], np.float32), teeth_lo)
        _blend(roi, inner, interior)
    # the dark line where the lips meet (a closed mouth is a line), fading as they part
    line = ts.soft(np.minimum(0.045 + 0.03 * opening - np.abs(Y - (y_ui + y_li) / 2), inside_x))
    _blend(roi, lips * 0.35, line * 0.9 * (1.0 - np.clip(opening / 0.2, 0, 1)))

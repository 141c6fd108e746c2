"""The batched torch renderer of the procedural street simulator.

Scenes are boxes standing on a ground plane, seen by a pinhole camera that looks down
+x with no yaw and no roll.  That makes every camera ray ``(1, dy[u], dz[v])``
*separable*: its direction across the road depends only on the column ``u``, its
elevation only on the row ``v``, and its parameter ``t`` is the planar depth (x).
The renderer uses this three times, so that almost no work is "pixels × boxes":

1. **Boxes, per column.**  In the vertical plane of one column a box is a rectangle
   ``t ∈ [A, B] × z ∈ [z0, z1]`` (``A, B`` from a 2-D slab test of its footprint), so the
   rows it covers form one interval (from the slopes of the rectangle's corners).
   Footprints of different objects do not overlap, so along a column they are met in
   the order of ``A``; a car's cabin sits on its body and a tree's trunk under its
   canopy, and those parts are ordered just before their main box.  Painting the
   intervals of each column near-first gives every pixel the first box it sees.  Boxes
   are first culled to bands of 8 columns, and the paint loop runs over columns sorted
   by how many boxes they hold, so its work follows the average, not the worst column.
   Where a ray enters a box through a wall (not the roof) its hit point's x and y are
   the same down the whole column: textures across a wall (window columns, lamps,
   wheels, pillars) are decided per column and box, only their heights per pixel.
2. **The ground, per row.**  The ground point of row ``v`` lies at x = ``oz / -dz[v]`` for
   every column, so the road layout is a function of a row constant and the lateral
   offset.
3. **Shadows on the ground, per row.**  The shadow a box casts toward the sun, cut at
   one row's x, is an interval of y, hence of columns: the same paint loop draws hard
   shadows of every box on the ground.  Cars and other small objects take the shadow
   at their own centre (a ray toward the sun against the buildings).  Overcast weathers
   have no sun: their "shadow" falls straight down, a contact shadow under everything.

Colours come from a table built per batch — for every box × face direction × pattern
(paint, tyre, glass, window, lit window, head/tail lamp, ground floor, signal lamp) and
for every ground class × shadow — so a pixel costs one lookup instead of a shading
computation.  The rest (sky, fog, wet-road reflections, rain) is elementwise arithmetic
on N×H×W tensors; masks are floats, not ``torch.where``, which is slow on CPUs.
Everything runs on the tensors' device; a scene renders the same alone or in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import labels as L
from .scene import (
    BOX_FIELDS,
    M_BUILDING,
    M_CANOPY,
    M_CAR_BODY,
    M_CAR_CABIN,
    M_CARGO,
    M_POLE,
    M_TLIGHT,
    M_TRUNK,
    ROAD_HALF_WIDTH,
    SCENE_FIELDS,
    SIDEWALK_WIDTH,
    SceneBatch,
)

__all__ = ["Camera", "Frames", "Renderer", "SKY_DEPTH", "GROUND_FAR"]

#: Depth written for sky pixels (metres).
SKY_DEPTH = 1000.0
#: Ground farther than this is drawn as sky (the horizon).
GROUND_FAR = 900.0
#: Shadows are drawn on the ground nearer than this (beyond, a pixel is metres wide).
SHADOW_FAR = 250.0
_BIG = 1.0e4
_BAND = 8  # columns per culling band
_ROW_BAND = 4  # rows per shadow-culling band
_F = {name: i for i, name in enumerate(BOX_FIELDS)}
_S = {name: i for i, name in enumerate(SCENE_FIELDS)}

# Box colour table: 5 face directions × 9 patterns per box.
_NORMALS = 5  # front (-x), left wall (+y normal), right wall (-y normal), top, bottom
_P_BASE, _P_DARK, _P_GLASS, _P_WINDOW, _P_LIT, _P_HEAD, _P_TAIL, _P_FLOOR0, _P_SIGNAL = range(9)
_PATTERNS = 9
_AMBIENT_OF_NORMAL = (0.8, 0.72, 0.72, 1.0, 0.45)
# Ground classes (× lit / in shadow).
_G_TERRAIN, _G_SIDEWALK, _G_JOINT, _G_ROAD, _G_WHITE, _G_YELLOW = range(6)
_GROUND_CLASSES = 6
_GROUND_ALBEDO = (
    (0.30, 0.36, 0.17),  # terrain (grass)
    (0.60, 0.59, 0.58),  # sidewalk
    (0.50, 0.49, 0.48),  # sidewalk joint
    (0.30, 0.30, 0.32),  # asphalt (times the scene's road tone)
    (0.86, 0.86, 0.83),  # white paint
    (0.86, 0.70, 0.22),  # yellow paint
)
_GROUND_SEM = (L.TERRAIN, L.SIDEWALK, L.SIDEWALK, L.ROAD, L.ROAD_LINE, L.ROAD_LINE)


@dataclass(frozen=True)
class Camera:
    """A pinhole dash camera: ``fov`` is the horizontal field of view in degrees."""

    height: int
    width: int
    fov: float = 90.0
    near: float = 0.3

    @property
    def focal(self) -> float:
        return self.width / 2.0 / math.tan(math.radians(self.fov) / 2.0)


@dataclass
class Frames:
    """What the renderer returns for a batch of scenes."""

    images: torch.Tensor  # N×3×H×W uint8
    semantic: torch.Tensor  # N×H×W int64
    depth: torch.Tensor  # N×H×W float32 metres (SKY_DEPTH for sky)
    instances: torch.Tensor  # N×H×W int64: car instance (1..) or 0


def _step(x: torch.Tensor) -> torch.Tensor:
    """1 where x > 0, 0 where x < 0 (a float mask; exact away from |x| < 1e-4)."""
    return (x * _BIG).clamp_(0.0, 1.0)


def _within(x: torch.Tensor, half: float | torch.Tensor) -> torch.Tensor:
    """1 where |x| < half."""
    return ((half - x.abs()) * _BIG).clamp_(0.0, 1.0)


def _hash(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A float hash in [0, 1) of two float fields (after Dave Hoskins' "hash without sine")."""
    x = torch.frac(a * 0.1031)
    y = torch.frac(b * 0.1030)
    d = x * (y + 33.33) + y * (x + 19.19)
    return torch.frac((x + d) * (y + d))


def _compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the true entries of ``mask`` (…×B) packed to the front of a …×K array
    (K = the largest count, at least 1; the rest point at entry 0), and their count per row."""
    counts = mask.sum(-1)
    k = max(int(counts.max()) if counts.numel() else 0, 1)
    pos = mask.long().cumsum(-1) - 1
    pos = torch.where(mask, pos, torch.full_like(pos, k))  # the rest goes to a dump slot
    idx = torch.zeros(*mask.shape[:-1], k + 1, dtype=torch.long, device=mask.device)
    idx.scatter_(-1, pos, torch.arange(mask.shape[-1], device=mask.device).expand_as(pos))
    return idx[..., :k], counts


def _paint(lo: torch.Tensor, hi: torch.Tensor, count: torch.Tensor, length: int) -> torch.Tensor:
    """Paint integer intervals ``[lo, hi]`` (M×K, slots in priority order, the first
    ``count[m]`` valid) onto M lines of ``length`` cells.  Returns M×length floats: 0
    where no slot covers a cell, else ``K - k`` for the first slot ``k`` that does.

    Lines are processed sorted by their number of slots, so that slot ``k`` only touches
    the prefix of lines that have one: the work is the sum, not M × the largest count."""
    M, K = lo.shape
    dev = lo.device
    order = torch.argsort(count, descending=True)
    cnt = count.index_select(0, order)
    n_active = (cnt[None, :] > torch.arange(K, device=dev)[:, None]).sum(1).tolist()  # lines with a slot k
    lo, hi = lo.index_select(0, order), hi.index_select(0, order)
    prio = (K - torch.arange(K, device=dev, dtype=lo.dtype))[None, :]
    # covered ⟺ |cell - centre| ≤ half ⟺ (half + 1 - |cell - centre|) ≥ 1 on integer cells;
    # scaled by the priority p and clamped to [0, p] it is p where covered, 0 elsewhere.
    centre_p = (lo + hi) * 0.5 * prio
    reach_p = ((hi - lo) * 0.5 + 1.0) * prio
    cells = torch.arange(length, device=dev, dtype=lo.dtype)
    best = torch.zeros(M, length, device=dev)
    tmp = torch.empty(M, length, device=dev)
    for k in range(K):
        m = n_active[k]
        if m == 0:
            break
        p = float(K - k)
        t = tmp[:m]
        torch.sub(cells * p, centre_p[:m, k, None], out=t)
        t.abs_()
        torch.sub(reach_p[:m, k, None], t, out=t)
        t.clamp_(0.0, p)
        b = best[:m]
        torch.maximum(b, t, out=b)
    out = torch.empty_like(best)
    out.index_copy_(0, order, best)
    return out


class Renderer:
    """Renders a `SceneBatch` to `Frames` on one device at one resolution."""

    def __init__(self, camera: Camera, device: str | torch.device = "cpu") -> None:
        self.camera = camera
        self.device = torch.device(device)
        H, W = camera.height, camera.width
        f = camera.focal
        dev = self.device
        uc = torch.arange(W, device=dev, dtype=torch.float32) + 0.5
        dy = -(uc - W / 2.0) / f
        dy = torch.where(dy.abs() < 1e-6, torch.full_like(dy, 1e-6), dy)  # odd widths: the centre column
        self.dy = dy  # (W,)
        self.inv_dy = 1.0 / dy
        self.rows = torch.arange(H, device=dev, dtype=torch.float32)
        self.cols = torch.arange(W, device=dev, dtype=torch.float32)
        # Fixed screen-space textures (from a fixed seed: part of the renderer, like film
        # grain, not of the scene).
        g = torch.Generator(device="cpu").manual_seed(20190506)
        self.grain = torch.rand(H, W, generator=g).to(dev)
        streak_seed = (torch.rand(1, 1, H, 2 * W, generator=g) > 0.985).float()
        klen = max(3, H // 10) | 1
        kern = torch.zeros(1, 1, klen, klen)
        for i in range(klen):  # a slanted line: rain falling toward the camera, blown a little
            kern[0, 0, i, min(klen - 1, (i * 2) // 5 + klen // 3)] = 1.0
        self.streaks = F.conv2d(streak_seed, kern, padding=klen // 2).clamp_(0, 1).to(dev)[0, 0]  # (H, 2W)
        yy = (self.rows + 0.5) / H - 0.5
        xx = (self.cols + 0.5) / W - 0.5
        self.vignette = 1.0 - 0.35 * (xx[None, :] ** 2 + yy[:, None] ** 2)
        # the last multiply of every frame: vignette and a little film grain
        self.finish = self.vignette * (0.96 + 0.08 * self.grain)

    # ------------------------------------------------------------------ main entry

    @torch.no_grad()
    def render(self, batch: SceneBatch) -> Frames:
        dev = self.device
        boxes = torch.as_tensor(batch.boxes, device=dev)
        scene = torch.as_tensor(batch.scene, device=dev)
        cam = self.camera
        H, W = cam.height, cam.width
        N, B, _ = boxes.shape
        f = cam.focal
        sc = {k: scene[:, i] for k, i in _S.items()}
        bx = {k: boxes[:, :, i] for k, i in _F.items()}
        oy, oz = sc["cam_y"], sc["cam_z"]
        cy = sc["horizon"] * H
        dz = -(self.rows[None, :] + 0.5 - cy[:, None]) / f  # (N, H)
        dz = torch.where(dz.abs() < 1e-7, torch.full_like(dz, -1e-7), dz)

        slots = self._columns(bx, sc, N, B)
        K = slots["A"].shape[-1]
        best = _paint(*self._rows_of_slots(slots["A"], slots["B"], slots["z"], sc), slots["count"].view(-1), H)
        best = best.view(N, W, H).transpose(1, 2).contiguous()  # (N, H, W)
        hit = best.clamp(0.0, 1.0)
        kidx = (K - best).clamp_(max=K - 1).long()
        below = (dz < 0).float()[:, :, None]  # (N, H, 1)

        tables = {k: v.transpose(1, 2).contiguous() for k, v in slots.items() if k not in ("z", "B", "count")}

        def slot(name: str, index: torch.Tensor = kidx) -> torch.Tensor:
            """A pixel's value from its column's slot table (N×K×W)."""
            return torch.gather(tables[name], 1, index)

        A_p = slot("A")
        # the z a ray enters through: the top below the horizon, the bottom above it
        z_p = slot("z_in", kidx + ((1.0 - below) * K).long())
        code = slot("code")  # (box · 64 + window cell) · 2 + entered through the -x face
        q = torch.floor(code * 0.5)
        front_col = code - q * 2.0
        box = torch.floor(q * (1.0 / 64.0))
        cell = q - box * 64.0
        box_g = box + torch.arange(N, device=dev, dtype=torch.float32)[:, None, None] * B

        # ---------------------------------------------------------- depth and faces
        dzr = dz[:, :, None]
        oyr, ozr = oy[:, None, None], oz[:, None, None]
        tz = (z_p - ozr) / dzr  # where the ray crosses the box's top (or bottom) plane
        t_box = torch.maximum(A_p, tz)
        zface = _step(tz - A_p)  # entered through the roof (or the floor)
        gdist = (ozr / (-dzr).clamp(min=1e-9)).clamp(max=GROUND_FAR)  # (N, H, 1)
        ground_row = below * _step(GROUND_FAR - 1.0 - gdist)
        is_box = hit
        not_box = 1.0 - hit
        is_ground = not_box * ground_row
        is_sky = not_box - is_ground
        depth = is_box * t_box + is_ground * gdist + is_sky * SKY_DEPTH

        # ---------------------------------------------------------- box patterns
        # Bands decided per column and box (see _slot_patterns): below ``under`` a wall
        # shows its under pattern (tyres and underbody, a building's ground floor),
        # between the band rows its band pattern (glass, lamps); buildings have windows.
        vc = (self.rows + 0.5)[None, :, None]
        pats = slot("pats")
        bpat = torch.floor(pats * (1.0 / 16.0))
        upat = pats - bpat * 16.0
        under = _step(vc - slot("under"))
        band = _step(vc - slot("band_top")) * _step(slot("band_bottom") - vc) * (1.0 - under)
        fh = slot("floor")  # building floor height, negative on wall columns without windows
        fz = (ozr + A_p * dzr) / fh.abs().clamp_(min=1.0)
        window = _step(fh) * _step(fz - 1.0) * _within(torch.frac(fz) - 0.55, 0.28)
        lit = window * _step(sc["lit_windows"][:, None, None] - _hash(torch.floor(fz) * 7.3 + box, cell * 3.1 + box))
        pattern = under * upat + band * bpat + window * _P_WINDOW + lit * (_P_LIT - _P_WINDOW)
        side_pos = (self.dy < 0).float()  # columns right of centre see walls facing +y
        wall = 1.0 - zface
        normal = wall * (1.0 - front_col) * (2.0 - side_pos) + zface * (4.0 - below)
        box_entry = (box_g * _NORMALS + normal) * _PATTERNS + pattern * wall

        # ---------------------------------------------------------- ground (rows that can see it)
        r0 = int(torch.floor(cy.min()).clamp(0, H - 1))
        gd = gdist[:, r0:]
        gy = oyr + gd * self.dy  # (N, H - r0, W)
        gclass = torch.zeros(N, H, W, device=dev)
        gclass[:, r0:] = self._ground_class(sc, gd, gy)
        shadow = torch.zeros(N, H, W, device=dev)
        shadow[:, r0:] = self._ground_shadow(bx, sc, gd, ground_row[:, r0:], N, H - r0, W)
        n_box_entries = N * B * _NORMALS * _PATTERNS
        scene_idx = torch.arange(N, device=dev, dtype=torch.float32)[:, None, None]
        ground_entry = n_box_entries + (scene_idx * _GROUND_CLASSES + gclass) * 2.0 + shadow
        entry = (is_box * box_entry + not_box * ground_entry).long().view(-1)

        # ---------------------------------------------------------- colour and labels
        obj_shadow = self._object_shadow(bx, sc)
        table = self._table(bx, sc, obj_shadow)
        looked = [table[c].index_select(0, entry).view(N, H, W) for c in range(5)]
        colour = torch.stack(looked[:3], 1)
        r1 = min(int(torch.ceil(cy.max())) + 1, H)  # rows that can see the sky
        colour[:, :, :r1] += is_sky[:, None, :r1] * (self._sky(sc, dz[:, :r1], N, r1, W) - colour[:, :, :r1])
        wet_idx = torch.nonzero(sc["wet"] > 0).flatten()
        if wet_idx.numel():
            road_like = _step(1.5 - (gclass - _G_ROAD).abs()) + 0.5 * _step(0.5 - (gclass - 1.5).abs())
            colour = self._reflect(colour, wet_idx, cy, road_like * is_ground, sc["wet"], dz, H, W)
        # fog: the sky is hazy already
        fog = (1.0 - torch.exp(depth * -sc["fog"][:, None, None])) * (1.0 - is_sky)
        colour += (_col(sc, "fog")[:, :, None, None] * 255.0 - colour) * fog[:, None]
        rain_idx = torch.nonzero(sc["rain"] > 0).flatten()
        if rain_idx.numel():
            colour = self._rain(colour, rain_idx, sc, H, W)
        colour *= self.finish  # vignette and film grain
        images = colour.clamp_(0.0, 255.0).add_(0.5).to(torch.uint8)
        sem = looked[3] + is_sky * (float(L.SKY) - looked[3])
        return Frames(images=images, semantic=sem.long(), depth=depth, instances=looked[4].long())

    # ------------------------------------------------------------------ geometry

    def _columns(self, bx: dict[str, torch.Tensor], sc: dict[str, torch.Tensor], N: int, B: int):
        """Per column, the boxes that can cover it, sorted near-first (N×W×K), with a code
        (box, window cell, the material's column flag, entry through the -x face), the
        entry and exit distances ``A``, ``B``, the z ranges (N×W×K×2) and the counts (N×W)."""
        dev = bx["x0"].device
        cam = self.camera
        W = cam.width
        f, near, cx = cam.focal, cam.near, W / 2.0
        x0, x1, y0, y1, z0, z1 = bx["x0"], bx["x1"], bx["y0"], bx["y1"], bx["z0"], bx["z1"]
        oy = sc["cam_y"]
        exists = (bx["material"] > 0) & (x1 > near) & (x0 <= x1)
        # screen columns each footprint spans (its corners, clipped to the near plane)
        xn = x0.clamp(min=near)
        us = torch.stack([cx - f * (yc - oy[:, None]) / xc for xc in (xn, x1) for yc in (y0, y1)], -1)
        umin, umax = us.amin(-1), us.amax(-1)
        G = (W + _BAND - 1) // _BAND
        band_lo = torch.arange(G, device=dev, dtype=torch.float32)[None, :, None] * _BAND
        in_band = exists[:, None, :] & (umax[:, None, :] >= band_lo - 1) & (umin[:, None, :] <= band_lo + _BAND + 1)
        slot, n_in = _compact(in_band)  # (N, G, K) box indices
        K = slot.shape[-1]
        ok_band = torch.arange(K, device=dev) < n_in[..., None]
        col_slot = slot.repeat_interleave(_BAND, dim=1)[:, :W]  # (N, W, K)
        col_ok = ok_band.repeat_interleave(_BAND, dim=1)[:, :W]
        flat = col_slot.reshape(N, W * K)

        def col(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, flat).view(N, W, K)

        inv_dy = self.inv_dy[None, :, None]
        oyc = oy[:, None, None]

        def entry(cx0: torch.Tensor, cx1: torch.Tensor, cy0: torch.Tensor, cy1: torch.Tensor):
            ta = (cy0 - oyc) * inv_dy
            tb = (cy1 - oyc) * inv_dy
            lo = torch.minimum(ta, tb)
            return torch.maximum(cx0, lo).clamp_(min=near), torch.minimum(cx1, torch.maximum(ta, tb)), cx0 >= lo

        bx0, bx1, by0, by1 = col(x0), col(x1), col(y0), col(y1)
        A, Bt, front = entry(bx0, bx1, by0, by1)
        main = (torch.arange(B, device=dev, dtype=torch.float32)[None, :] + bx["main"]).long()
        mains = [torch.gather(t, 1, main) for t in (x0, x1, y0, y1)]
        Am, _, _ = entry(*(col(t) for t in mains))
        ok = col_ok & (A <= Bt)
        key = Am - col(bx["rank"]) * 1e-3 + (~ok).float() * 1e9
        key, order = key.sort(-1)
        count = ok.sum(-1)
        Kc = max(int(count.max()), 1)
        order = order[..., :Kc]

        def srt(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 2, order)

        A, Bt, front = srt(A), srt(Bt), srt(front)
        box = srt(col_slot)
        flatb = box.reshape(N, W * Kc)

        def colb(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, flatb).view(N, W, Kc)

        bz = torch.stack((colb(z0), colb(z1)), -1)  # (N, W, Kc, 2)
        valid = torch.arange(Kc, device=dev)[None, None, :] < count[..., None]
        A = torch.where(valid, A, torch.full_like(A, 1e9))
        out = {"A": A, "B": Bt, "z": bz, "count": count, "z_in": torch.cat((bz[..., 1], bz[..., 0]), 2)}
        out.update(self._slot_patterns(bx, sc, colb, box, front, A))
        return out

    def _slot_patterns(self, bx, sc, colb, box, front, A) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """What a wall shows down one column.  A texture across a wall (window columns,
        lamps, wheels, pillars) depends only on the column, so it is decided here once
        per column and box, as row bands: ``under`` (rows below it show the under
        pattern: tyres and underbody, a building's ground floor), ``band_top`` …
        ``band_bottom`` (glass, a lamp), and ``floor`` (windows on upper floors)."""
        cam = self.camera
        f, H = cam.focal, cam.height
        oy = sc["cam_y"][:, None, None]
        oz = sc["cam_z"][:, None, None]
        cy = (sc["horizon"] * H)[:, None, None]
        mat = colb(bx["material"])
        x0, x1, y0, y1, z0, z1 = (colb(bx[k]) for k in ("x0", "x1", "y0", "y1", "z0", "z1"))
        pa, pb, pc = colb(bx["a"]), colb(bx["b_"]), colb(bx["c"])
        frontf = front.float()
        # the hit's horizontal coordinate on the wall: lateral on the -x face, x on a side
        along = frontf * (oy + A * self.dy[None, :, None]) + (1.0 - frontf) * A
        bld = mat == M_BUILDING
        body = mat == M_CAR_BODY
        cab = body & (pb > 1.0)  # a truck's cab: a body with a window band pb..pc
        car_body = body & ~cab
        cabin = mat == M_CAR_CABIN
        cargo = mat == M_CARGO
        half = (y1 - y0) * 0.5
        ly = (along - (y0 + y1) * 0.5).abs()
        wheel = (~front) & (torch.minimum((along - x0 - 0.85).abs(), (x1 - along - 0.85).abs()) < 0.38)
        lamp_col = front & ((ly - (half - 0.24)).abs() < 0.17)
        edge = torch.where(front, half - ly, torch.minimum(along - x0, x1 - along))
        pillar = edge < 0.14
        signal_col = front & (ly < 0.12) & (mat == M_TLIGHT)
        spacing = pb.clamp(min=0.5)
        win_col = torch.frac(along / spacing) < pc
        cell = torch.floor(along / spacing).remainder_(64.0)
        none = torch.full_like(A, -1.0)
        under_z = torch.where(body, 0.32 + 0.3 * wheel.float(), none)
        under_z = torch.where(cargo, torch.full_like(A, 0.87), under_z)
        under_z = torch.where(bld, pa, under_z)
        upat = (body | cargo).float() * _P_DARK + bld.float() * _P_FLOOR0
        glass_top = z1 - (1.0 - pb) * (z1 - z0)
        lamp = car_body & lamp_col
        glass = (cabin | cab) & ~pillar
        b0 = torch.where(lamp, torch.full_like(A, 0.6), none)
        b1 = torch.where(lamp, torch.full_like(A, 0.84), none)
        b0 = torch.where(glass, torch.where(cab, pb, z0 + 0.04), b0)
        b1 = torch.where(glass, torch.where(cab, pc, glass_top), b1)
        b0 = torch.where(signal_col, z1 - 0.44, b0)
        b1 = torch.where(signal_col, z1 - 0.16, b1)
        head_or_tail = torch.where(pa > 0, torch.full_like(A, _P_HEAD), torch.full_like(A, _P_TAIL))
        bpat = lamp.float() * head_or_tail + glass.float() * _P_GLASS + signal_col.float() * _P_SIGNAL

        def row(z: torch.Tensor) -> torch.Tensor:  # the (continuous) image row of height z on the wall
            return cy - f * (z - oz) / A

        return {
            "code": (box.float() * 64.0 + cell) * 2.0 + frontf,
            "under": row(under_z),
            "band_top": row(b1),
            "band_bottom": row(b0),
            "pats": upat + 16.0 * bpat,
            "floor": torch.where(bld, torch.where(win_col, pa, -pa), torch.zeros_like(A)),
        }

    def _rows_of_slots(self, A: torch.Tensor, Bt: torch.Tensor, bz: torch.Tensor, sc: dict[str, torch.Tensor]):
        """The row interval each (column, slot) rectangle ``[A, Bt] × [z0, z1]`` covers,
        from the slopes of its corners, as (N·W)×K floats (empty: far below row 0)."""
        cam = self.camera
        H, f = cam.height, cam.focal
        N, W, K = A.shape
        oz = sc["cam_z"][:, None, None]
        cy = (sc["horizon"] * H)[:, None, None]
        z0, z1 = bz[..., 0] - oz, bz[..., 1] - oz
        s = torch.stack((z0 / A, z0 / Bt, z1 / A, z1 / Bt), -1)
        smin, smax = s.amin(-1), s.amax(-1)
        lo = torch.ceil(cy - f * smax - 0.5).clamp_(min=0.0)
        hi = torch.floor(cy - f * smin - 0.5).clamp_(max=H - 1.0)
        empty = (hi < lo) | (A > 1e8)
        lo = torch.where(empty, torch.full_like(lo, -1e4), lo)
        hi = torch.where(empty, torch.full_like(hi, -1e4), hi)
        return lo.view(N * W, K), hi.view(N * W, K)

    def _ground_class(self, sc: dict[str, torch.Tensor], gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        """The ground class (`_G_*`) of each pixel's ground point (row x ``gx``, lateral ``gy``)."""
        R, S = ROAD_HALF_WIDTH, SIDEWALK_WIDTH
        Lr = sc["road_length"][:, None, None]
        J1 = Lr + 2 * R
        junction = sc["junction"][:, None, None]
        isX = _within(junction, 0.5)
        isL = _within(junction - 2.0, 0.5)
        turn = sc["turn"][:, None, None]
        ay = gy.abs()
        # row (x) conditions are (N, H, 1): cheap
        before_j = _step(J1 - gx)
        main_rows = (before_j + isX).clamp_(max=1.0)
        main_rows_sw = (_step(J1 + S - gx) + isX).clamp_(max=1.0)
        cross_rows = _step(gx - Lr) * before_j
        cross_rows_sw = _step(gx - (Lr - S)) * _step(J1 + S - gx)
        one_side = 1.0 - isL * _step(-(gy * turn) - R)  # an L's side road goes one way only
        one_side_sw = 1.0 - isL * _step(-(gy * turn) - R - S)
        road = (_step(R - ay) * main_rows + cross_rows * one_side).clamp_(max=1.0)
        walk = (_step(R + S - ay) * main_rows_sw + cross_rows_sw * one_side_sw).clamp_(max=1.0) * (1.0 - road)
        joint = walk * (_step(0.1 - torch.frac(gx * 0.5)) + _step(0.07 - torch.frac(gy * 0.5))).clamp_(max=1.0)
        # markings, where a pixel's centre falls on the paint
        zone = _step(Lr - 5.2 - gx) + isX * _step(gx - J1 - 5.2)  # rows with lane markings
        dash = _step(0.36 - torch.frac(gx * (1.0 / 9.0)))
        yellow = _within(ay - 0.16, 0.09) * zone
        white = (
            _within(ay - 3.5, 0.1) * zone * dash
            + _within(ay - (R - 0.3), 0.1) * zone
            + _within(gx - (Lr - 4.9), 0.25) * _step(-gy) * _step(R - ay)  # stop line
            + (_within(gx - (Lr - 2.4), 1.7) + isX * _within(gx - (J1 + 2.4), 1.7))  # zebra crossings
            * _step(R - 0.4 - ay)
            * _within(torch.frac(gy * (1.0 / 1.2)) - 0.5, 0.25)
            + cross_rows * _within(ay - (R + 2.4), 1.7) * _within(torch.frac(gx * (1.0 / 1.2)) - 0.5, 0.25)
        ).clamp_(max=1.0) * road
        yellow = yellow * road * (1.0 - white)
        return (
            walk * _G_SIDEWALK
            + joint * (_G_JOINT - _G_SIDEWALK)
            + road * _G_ROAD
            + white * (_G_WHITE - _G_ROAD)
            + yellow * (_G_YELLOW - _G_ROAD)
        )

    def _ground_shadow(
        self,
        bx: dict[str, torch.Tensor],
        sc: dict[str, torch.Tensor],
        gdist: torch.Tensor,
        ground_row: torch.Tensor,
        N: int,
        H: int,
        W: int,
    ) -> torch.Tensor:
        """1 where the ground point of a pixel is in a box's shadow, else 0."""
        dev = gdist.device
        f = self.camera.focal
        cx = W / 2.0
        sun_z = sc["sun_z"].clamp(min=0.05)
        direct = _step(sc["sun_r"] + sc["sun_g"] - 0.8)  # a sun strong enough to cast shadows
        mx = sc["sun_x"] / sun_z * direct  # shadow offset per metre of height
        my = sc["sun_y"] / sun_z * direct
        grow = ((1.0 - direct) * 0.45)[:, None]  # contact shadows reach a little beyond the footprint
        x0, x1, y0, y1 = bx["x0"] - grow, bx["x1"] + grow, bx["y0"] - grow, bx["y1"] + grow
        z0, z1 = bx["z0"], bx["z1"]
        mxb = mx[:, None]
        # x range of each box's shadow on the ground
        sx_lo = torch.minimum(x0 - z0 * mxb, x0 - z1 * mxb)
        sx_hi = torch.maximum(x1 - z0 * mxb, x1 - z1 * mxb)
        Gr = (H + _ROW_BAND - 1) // _ROW_BAND
        g = gdist[:, :, 0]  # (N, H)
        pad = Gr * _ROW_BAND - H
        gb = F.pad(g, (0, pad), value=GROUND_FAR).view(N, Gr, _ROW_BAND)
        rowvalid = F.pad(ground_row[:, :, 0] * _step(SHADOW_FAR - g), (0, pad)).view(N, Gr, _ROW_BAND).amax(-1)
        band_lo, band_hi = gb.amin(-1), gb.amax(-1)
        m = (
            (bx["material"] > 0)[:, None, :]
            & (rowvalid[:, :, None] > 0)
            & (sx_hi[:, None, :] >= band_lo[:, :, None])
            & (sx_lo[:, None, :] <= band_hi[:, :, None])
        )
        slot, n_in = _compact(m)  # (N, Gr, K)
        ok = torch.arange(slot.shape[-1], device=dev) < n_in[..., None]
        K = slot.shape[-1]
        row_slot = slot.repeat_interleave(_ROW_BAND, dim=1)[:, :H]  # (N, H, K)
        row_ok = ok.repeat_interleave(_ROW_BAND, dim=1)[:, :H]
        fl = row_slot.reshape(N, H * K)

        def rs(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, fl).view(N, H, K)

        rx0, rx1, ry0, ry1, rz0, rz1 = rs(x0), rs(x1), rs(y0), rs(y1), rs(z0), rs(z1)
        gx = g[:, :, None]
        mxr, myr = mx[:, None, None], my[:, None, None]
        # heights σ at which the sun ray from (gx, ·) is inside the box's x extent
        flat_sun = mxr.abs() < 1e-4
        safe = torch.where(flat_sun, torch.full_like(mxr, 1e-4), mxr)
        sa, sb = (rx0 - gx) / safe, (rx1 - gx) / safe
        inside_x = (gx >= rx0) & (gx <= rx1)
        s_lo = torch.where(flat_sun, torch.where(inside_x, rz0, torch.full_like(rz0, 1e9)), torch.minimum(sa, sb))
        s_hi = torch.where(flat_sun, rz1, torch.maximum(sa, sb))
        s_lo = torch.maximum(s_lo, rz0)
        s_hi = torch.minimum(s_hi, rz1)
        ya = ry0 - torch.maximum(s_lo * myr, s_hi * myr)
        yb = ry1 - torch.minimum(s_lo * myr, s_hi * myr)
        # Along the building rows only the street between the facades is visible: a
        # shadow beyond them would be painted for nothing (and long sunset shadows of
        # the buildings behind would make the paint loop long).
        Lr = sc["road_length"][:, None, None]
        street = _step(Lr - SIDEWALK_WIDTH - gx) + _step(sc["junction"][:, None, None] - 0.5).neg_().add_(1.0) * _step(
            gx - Lr - 2 * ROAD_HALF_WIDTH - SIDEWALK_WIDTH
        )
        wall = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + 2.5
        ya = torch.maximum(ya, -wall - 1e6 * (1.0 - street))
        yb = torch.minimum(yb, wall + 1e6 * (1.0 - street))
        oy = sc["cam_y"][:, None, None]
        gxs = gx.clamp(min=1e-3)
        ilo = torch.ceil(cx - 0.5 - f * (yb - oy) / gxs).clamp_(min=0.0)
        ihi = torch.floor(cx - 0.5 - f * (ya - oy) / gxs).clamp_(max=W - 1.0)
        okr = row_ok & (s_hi >= s_lo) & (ihi >= ilo) & (gx < SHADOW_FAR)
        # valid slots first, so that the paint loop sees a prefix
        okr, order = okr.float().sort(dim=-1, descending=True, stable=True)
        ilo, ihi = torch.gather(ilo, 2, order), torch.gather(ihi, 2, order)
        count = okr.sum(-1).long()
        Kc = max(int(count.max()), 1)
        best = _paint(ilo[..., :Kc].reshape(N * H, Kc), ihi[..., :Kc].reshape(N * H, Kc), count.view(-1), W)
        return best.view(N, H, W).clamp_(0.0, 1.0)

    def _object_shadow(self, bx: dict[str, torch.Tensor], sc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per box: 1 if a car's centre lies in the shadow of a building (a car takes one
        shadow value for all of it), else 0."""
        N, B = bx["x0"].shape
        out = torch.zeros(N, B, device=bx["x0"].device)
        n_car = int((bx["inst"] > 0).sum(1).max()) if B else 0  # cars come first in a scene's boxes
        casters, n_cast = _compact(bx["material"] == M_BUILDING)
        if n_car == 0 or int(n_cast.max()) == 0:
            return out
        sun = torch.stack((sc["sun_x"], sc["sun_y"], sc["sun_z"]), -1)
        inv = 1.0 / torch.where(sun.abs() < 1e-6, torch.full_like(sun, 1e-6), sun)
        rx0, rx1, ry0, ry1, rz0, rz1 = (bx[k][:, :n_car, None] for k in ("x0", "x1", "y0", "y1", "z0", "z1"))
        p = ((rx0 + rx1) * 0.5, (ry0 + ry1) * 0.5, rz0 * 0.6 + rz1 * 0.4)
        ok = (torch.arange(casters.shape[1], device=out.device)[None, :] < n_cast[:, None])[:, None, :]
        tn, tf = None, None
        for i, (lo_k, hi_k) in enumerate((("x0", "x1"), ("y0", "y1"), ("z0", "z1"))):
            lo = torch.gather(bx[lo_k], 1, casters)[:, None, :]
            hi = torch.gather(bx[hi_k], 1, casters)[:, None, :]
            inv_i = inv[:, i, None, None]
            ta, tb = (lo - p[i]) * inv_i, (hi - p[i]) * inv_i
            near, far = torch.minimum(ta, tb), torch.maximum(ta, tb)
            tn = near if tn is None else torch.maximum(tn, near)
            tf = far if tf is None else torch.minimum(tf, far)
        blocked = ok & (tf >= tn) & (tf > 0)
        out[:, :n_car] = blocked.any(-1).float() * (bx["inst"][:, :n_car] > 0).float()
        return out

    # ------------------------------------------------------------------ colour

    def _table(self, bx: dict[str, torch.Tensor], sc: dict[str, torch.Tensor], obj_shadow: torch.Tensor):
        """What a pixel shows, per table entry: rows r, g, b (lit, 0..255), semantic id
        and car instance.  Entries: every box × face direction × pattern, then every
        scene × ground class × (lit, in shadow).  Returns 5 × entries."""
        dev = obj_shadow.device
        N, B = obj_shadow.shape
        sun = torch.stack((sc["sun_x"], sc["sun_y"], sc["sun_z"]), 0)  # (3, N)
        sun_col, amb_col = _col(sc, "sun").t()[:, :, None], _col(sc, "amb").t()[:, :, None]  # (3, N, 1)
        strength = sc["shadow"]
        # n·L per face direction: -x, +y, -y, +z, -z
        ndl = torch.stack((-sun[0], sun[1], -sun[1], sun[2], -sun[2]), -1).clamp(min=0.0)  # (N, 5)
        amb_f = torch.tensor(_AMBIENT_OF_NORMAL, device=dev)
        direct = ndl[:, None, :] * (1.0 - strength[:, None, None] * obj_shadow[:, :, None])  # (N, B, 5)
        light = amb_col[..., None] * amb_f + sun_col[..., None] * direct  # (3, N, B, 5)
        base = torch.stack((bx["r"], bx["g"], bx["b"]), 0)  # (3, N, B)
        hor = _col(sc, "hor").t()[:, :, None].expand(3, N, B)
        zero = torch.zeros_like(base)
        albedo = torch.stack(
            (
                base,  # paint
                zero + 0.04,  # tyres, underbody
                0.15 * hor + 0.05,  # glass
                0.32 * hor + 0.05,  # windows
                0.32 * hor + 0.05,  # lit window: window glass plus emission
                zero + 0.55,  # head lamp glass
                base * 0.4,  # tail lamp glass
                base * 0.55,  # ground floor (shop fronts, doors)
                zero + 0.05,  # signal head
            ),
            -1,
        )  # (3, N, B, P)
        box = albedo[:, :, :, None, :] * light[..., None]  # (3, N, B, 5, P)
        lights = sc["lights"]
        warm = torch.tensor([0.95, 0.75, 0.42], device=dev)[:, None, None, None]
        box[..., _P_LIT] += warm
        box[..., _P_HEAD] += torch.tensor([1.0, 0.95, 0.8], device=dev)[:, None, None, None] * lights[:, None, None]
        box[..., _P_TAIL] += torch.tensor([0.9, 0.05, 0.03], device=dev)[:, None, None, None] * lights[:, None, None]
        state = bx["a"][None, :, :, None]  # signal: 1 green, 0 red
        red = torch.tensor([0.95, 0.15, 0.05], device=dev)[:, None, None, None]
        green = torch.tensor([0.1, 0.9, 0.4], device=dev)[:, None, None, None]
        box[..., _P_SIGNAL] += red * (1.0 - state) + green * state
        labels = torch.stack((bx["sem"], bx["inst"]), 0)[:, :, :, None, None].expand(2, N, B, _NORMALS, _PATTERNS)
        # ground: albedo × (ambient + sun) lit and in shadow (overcast: a contact shadow)
        galb = torch.tensor(_GROUND_ALBEDO, device=dev).t()[:, None, :].repeat(1, N, 1)  # (3, N, C)
        galb[:, :, _G_ROAD] *= sc["road_tone"]
        overcast = 1.0 - _step(sc["sun_r"] + sc["sun_g"] - 0.8)
        lit_g = amb_col + sun_col * sun[2][:, None]  # (3, N, 1)
        shade_g = amb_col * (1.0 - 0.5 * overcast)[:, None] + sun_col * (sun[2] * (1.0 - strength))[:, None]
        ground = galb[..., None] * torch.stack((lit_g, shade_g), -1)  # (3, N, C, 2)
        gsem = torch.tensor(_GROUND_SEM, device=dev, dtype=torch.float32)[None, :, None].expand(N, -1, 2)
        rgb = torch.cat((box.reshape(3, -1), ground.reshape(3, -1)), 1) * 255.0
        sem = torch.cat((labels.reshape(2, -1), torch.stack((gsem, torch.zeros_like(gsem))).reshape(2, -1)), 1)
        return torch.cat((rgb, sem), 0)

    def _sky(self, sc: dict[str, torch.Tensor], dz: torch.Tensor, N: int, H: int, W: int) -> torch.Tensor:
        dev = dz.device
        dy = self.dy[None, None, :]
        dzr = dz[:, :, None]
        norm = torch.rsqrt(1.0 + dy * dy + dzr * dzr)
        elev = (dzr * norm[:, :, W // 2 : W // 2 + 1]).clamp(min=0.0)  # (N, H, 1): per row is enough
        gfac = (elev * 2.2).clamp(max=1.0)
        gfac = gfac * (2.0 - gfac)
        hor = _col(sc, "hor")[:, :, None, None]
        zen = _col(sc, "zen")[:, :, None, None]
        sky = hor + (zen - hor) * gfac[:, None]  # (N, 3, H, 1)
        # clouds: low-frequency value noise from the scene's seed, thinning toward the horizon
        seed = sc["seed"][:, None, None]
        coarse = _hash(
            torch.arange(6, device=dev, dtype=torch.float32)[None, :, None] * 1.7 + seed * 0.37,
            torch.arange(12, device=dev, dtype=torch.float32)[None, None, :] * 2.3 + seed * 0.71,
        )
        noise = F.interpolate(coarse[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        cl = sc["cloud"][:, None, None]
        cover = ((noise - (1.0 - cl)) * 3.0).clamp_(0.0, 1.0) * _step(elev - 0.01)
        cover = torch.maximum(cover, _step(cl - 0.95))
        cloud = _col(sc, "cloud")[:, :, None, None] * (0.85 + 0.3 * noise[:, None])
        sky = sky + (cloud - sky) * cover[:, None]
        # the sun: a disc and a glow (in view only when it is low, at sunset)
        sx, sy, sz = (sc[k][:, None, None] for k in ("sun_x", "sun_y", "sun_z"))
        cosang = ((sx + dy * sy + dzr * sz) * norm).clamp_(min=0.0)
        glow = cosang * cosang
        glow = glow * glow
        glow = glow * glow  # cos^8
        g2 = glow * glow
        g2 = g2 * g2
        g2 = g2 * g2  # cos^64
        disc = ((cosang - 0.9993) * 4000.0).clamp_(0.0, 1.0)
        vis = 1.0 - cover * 0.8
        sky = sky + _col(sc, "sun")[:, :, None, None] * ((0.35 * glow + 0.6 * g2 + 2.0 * disc) * vis)[:, None]
        return sky * 255.0

    def _reflect(
        self,
        colour: torch.Tensor,
        idx: torch.Tensor,
        cy: torch.Tensor,
        road: torch.Tensor,
        wet: torch.Tensor,
        dz: torch.Tensor,
        H: int,
        W: int,
    ) -> torch.Tensor:
        """Wet road: mirror what is above the horizon into the road (screen-space reflection)."""
        sub = colour.index_select(0, idx)
        n = idx.numel()
        v = self.rows[None, :, None]
        ripple = (self.grain[None] - 0.5) * 2.0
        mirror = (2.0 * cy.index_select(0, idx)[:, None, None] - v - 1.0 + ripple).round_().clamp_(0, H - 1)
        refl = torch.gather(sub, 2, mirror.long()[:, None].expand(n, 3, H, W))
        elev = (-dz.index_select(0, idx)[:, :, None]).clamp(min=0.0)
        fres = 0.12 + 0.55 * (1.0 - (elev * 5.0).clamp(max=1.0))
        k = road.index_select(0, idx) * fres * wet.index_select(0, idx)[:, None, None]
        sub = sub + (refl - sub) * k[:, None]
        return colour.index_copy(0, idx, sub)

    def _rain(self, colour: torch.Tensor, idx: torch.Tensor, sc: dict[str, torch.Tensor], H: int, W: int):
        """Rain streaks: the renderer's streak texture, shifted per scene."""
        shift = (sc["seed"].index_select(0, idx).long() % W).view(-1, 1, 1)
        cols = (self.cols.long()[None, None, :] + shift) % (2 * W)
        streak = torch.gather(self.streaks[None].expand(idx.numel(), H, 2 * W), 2, cols.expand(-1, H, W))
        sub = colour.index_select(0, idx)
        amount = (sc["rain"].index_select(0, idx)[:, None, None] * streak * 0.22)[:, None]
        sub = sub + (204.0 - sub) * amount
        return colour.index_copy(0, idx, sub)


def _col(sc: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """A scene colour field as (N, 3)."""
    return torch.stack((sc[f"{prefix}_r"], sc[f"{prefix}_g"], sc[f"{prefix}_b"]), -1)

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
   canopy, and those parts go just before their main box.  Painting each column's
   intervals with a priority that packs nearness gives every pixel the first box it
   sees.  Boxes are first culled to bands of 8 columns, and the paint loop runs over
   columns sorted by how many boxes they hold, so its work follows the average, not
   the worst column.  Where a ray enters a box through a wall (not the roof) its hit
   point's x and y are the same down the whole column: textures across a wall (window
   columns, lamps, wheels, pillars) are decided per column and box, only their heights
   per pixel — and only the pixels that see a box do that work.
2. **The ground, per row.**  The ground point of row ``v`` lies at x = ``oz / -dz[v]`` for
   every column, so the road layout along a row depends on a dozen yes/no facts about
   the row (its code) and the lateral offset: a lookup table per code.
3. **Shadows on the ground, per row.**  The shadow a box casts toward the sun, cut at
   one row's x, is an interval of y, hence of columns: the same paint loop draws hard
   shadows of every box on the ground.  Cars take the shadow at their own centre (a ray
   toward the sun against the buildings).  Overcast weathers have no sun: their
   "shadow" falls straight down, a contact shadow under everything.

Colours and labels come from a table built per batch — for every box × face direction
× pattern (paint, tyre, glass, window, lit window, head/tail lamp, ground floor, signal
lamp) and every scene × ground class × (lit, shadow), and the sky — so a pixel costs a
lookup, not a shading computation.  The rest (sky, fog, wet-road reflections, rain) is
elementwise arithmetic; masks are floats, not ``torch.where``, which is slow on CPUs.
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
    M_CAR_BODY,
    M_CAR_CABIN,
    M_CARGO,
    M_TLIGHT,
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
_PRIO_CM = float(1 << 17)  # distances in priorities: up to 1310 m in cm (· 64 stays exact in float32)
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
_SKY_ENTRY = 2 * _GROUND_CLASSES  # after a scene's ground entries
_SCENE_ENTRIES = _SKY_ENTRY + 1
# Lateral lookup tables of the ground: offsets ±_GY_RANGE metres in bins of _GY_STEP.
_GY_RANGE = 48.0
_GY_STEP = 0.04
_GY_BINS = int(round(2 * _GY_RANGE / _GY_STEP))


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
    mf = mask.float()  # float arithmetic: much faster than int64 on CPUs, exact for these counts
    pos = mf.cumsum(-1)
    counts = pos[..., -1].long() if mask.shape[-1] else torch.zeros(mask.shape[:-1], dtype=torch.long)
    k = max(int(counts.max()) if counts.numel() else 0, 1)
    pos = ((pos - (k + 1.0)) * mf + k).long()  # i-th true entry → i; the rest → k (a dump slot)
    idx = torch.zeros(*mask.shape[:-1], k + 1, dtype=torch.long, device=mask.device)
    idx.scatter_(-1, pos, torch.arange(mask.shape[-1], device=mask.device).expand_as(pos))
    return idx[..., :k], counts


def _paint(
    lo: torch.Tensor, hi: torch.Tensor, count: torch.Tensor, length: int, prio: torch.Tensor | None = None
) -> torch.Tensor:
    """Paint integer intervals ``[lo, hi]`` (M×K slots, the first ``count[m]`` valid) onto
    M lines of ``length`` cells.  Returns M×length floats: 0 where no slot covers a cell,
    else the largest priority ``prio[m, k] > 0`` of the slots that do (1 without ``prio``).

    Lines are processed sorted by their number of slots, so that slot ``k`` only touches
    the prefix of lines that have one: the work is the sum, not M × the largest count."""
    M, K = lo.shape
    dev = lo.device
    order = torch.argsort(count, descending=True)
    cnt = count.index_select(0, order)
    n_active = (cnt[None, :] > torch.arange(K, device=dev)[:, None]).sum(1).tolist()  # lines with a slot k
    lo, hi = lo.index_select(0, order), hi.index_select(0, order)
    # covered ⟺ |cell - centre| ≤ half ⟺ half + 1 - |cell - centre| ≥ 1 on integer cells
    centre = (lo + hi) * 0.5
    reach = (hi - lo) * 0.5 + 1.0
    if prio is not None:
        prio = prio.index_select(0, order)
    cells = torch.arange(length, device=dev, dtype=lo.dtype)
    best = torch.zeros(M, length, device=dev)
    tmp = torch.empty(M, length, device=dev)
    for k in range(K):
        m = n_active[k]
        if m == 0:
            break
        t = tmp[:m]
        torch.sub(cells, centre[:m, k, None], out=t)
        t.abs_()
        torch.sub(reach[:m, k, None], t, out=t)
        t.clamp_(0.0, 1.0)
        if prio is not None:
            t.mul_(prio[:m, k, None])
        b = best[:m]
        torch.maximum(b, t, out=b)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(M, device=dev))
    return best.index_select(0, inverse)  # (a gather of rows is much faster than index_copy_)


def _lateral_classes(bits: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Ground classes across the road (at lateral offsets ``gy``) for rows whose code has
    the ``bits`` (U×12, see `Renderer._row_code`).  Returns U×len(gy)."""
    R, S = ROAD_HALF_WIDTH, SIDEWALK_WIDTH
    b = [bits[:, i, None] for i in range(bits.shape[1])]
    main, main_sw, cross, cross_sw, zone, dash, stop, zebra, cross_stripe, joint_row, left, right = b
    gy = gy[None, :]
    ay = gy.abs()
    side = -gy * (left - right)  # how far a point lies on the side an L's side road does not go
    is_l = left + right
    one_side = 1.0 - is_l * _step(side - R)
    one_side_sw = 1.0 - is_l * _step(side - R - S)
    road = (_step(R - ay) * main + cross * one_side).clamp_(max=1.0)
    walk = (_step(R + S - ay) * main_sw + cross_sw * one_side_sw).clamp_(max=1.0) * (1.0 - road)
    joint = walk * (joint_row + _step(0.07 - torch.frac(gy * 0.5))).clamp_(max=1.0)
    white = (
        _within(ay - 3.5, 0.1) * zone * dash  # lane lines
        + _within(ay - (R - 0.3), 0.1) * zone  # edge lines
        + stop * _step(-gy) * _step(R - ay)
        + zebra * _step(R - 0.4 - ay) * _within(torch.frac(gy * (1.0 / 1.2)) - 0.5, 0.25)
        + cross_stripe * _within(ay - (R + 2.4), 1.7)
    ).clamp_(max=1.0) * road
    yellow = _within(ay - 0.16, 0.09) * zone * road * (1.0 - white)  # the centre line
    return (
        walk * _G_SIDEWALK
        + joint * (_G_JOINT - _G_SIDEWALK)
        + road * _G_ROAD
        + white * (_G_WHITE - _G_ROAD)
        + yellow * (_G_YELLOW - _G_ROAD)
    )


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
        # ground tables per row code, built as codes appear (see _ground_class)
        self._gy_bins = -_GY_RANGE + (torch.arange(_GY_BINS, device=dev, dtype=torch.float32) + 0.5) * _GY_STEP
        self._gcode_row = torch.full((1 << 12,), -1, dtype=torch.long, device=dev)
        self._glut = torch.zeros(0, device=dev)
        # the last multiply of every frame: vignette and a little film grain
        self.finish = self.vignette * (0.96 + 0.08 * self.grain)

    # ------------------------------------------------------------------ main entry

    @torch.no_grad()
    def render(self, batch: SceneBatch, out: Frames | None = None) -> Frames:
        """Render the scenes; with ``out``, write the frames into its tensors (N×… each)."""
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
        lo, hi = self._rows_of_slots(slots["A"], slots["B"], slots["z"], sc)
        best = _paint(lo, hi, slots["count"].view(-1), H, slots["prio"].view(N * W, K))
        best = best.view(N, W, H).transpose(1, 2).contiguous()  # (N, H, W): 0 where no box
        hit = best.clamp(0.0, 1.0)

        # ---------------------------------------------------------- box pixels (compacted)
        # Everything about a box pixel comes from its column's slot (tables N×K×W, flat);
        # only the pixels that see a box do this work.
        flat_best = best.view(-1)
        pix = torch.nonzero(flat_best).squeeze(1)
        # scene, row and column of each box pixel (float arithmetic: exact at these sizes)
        pf = pix.float() + 0.5
        n_f = torch.floor(pf * (1.0 / (H * W)))
        rc = pf - n_f * (H * W)
        v_f = torch.floor(rc * (1.0 / W))
        u_f = rc - v_f * W - 0.5
        p_i = flat_best.index_select(0, pix)
        k_f = p_i - torch.floor(p_i * (1.0 / 64.0)) * 64.0  # the slot, from the priority
        tables = {k: v.transpose(1, 2).reshape(-1) for k, v in slots.items() if k not in ("z", "B", "count", "prio")}

        def slot(name: str, index: torch.Tensor) -> torch.Tensor:
            return tables[name].index_select(0, index)

        sidx = ((n_f * K + k_f) * W + u_f).long()
        row = (n_f * H + v_f).long()

        def per_row(t: torch.Tensor) -> torch.Tensor:  # a per-scene (N,) or per-row (N, H) value, per pixel
            return (t[:, None].expand(N, H) if t.dim() == 1 else t).reshape(-1).index_select(0, row)

        dz_i = per_row(dz)
        oz_i = per_row(oz)
        below_i = (dz_i < 0).float()
        A = slot("A", sidx)
        # the z a ray enters through: the top below the horizon, the bottom above it
        z_in = slot("z_in", ((n_f * (2 * K) + k_f + (1.0 - below_i) * K) * W + u_f).long())
        tz = (z_in - oz_i) / dz_i  # where the ray crosses the box's top (or bottom) plane
        t_box = torch.maximum(A, tz)
        zface = _step(tz - A)  # entered through the roof (or the floor)
        wall = 1.0 - zface
        # code = ((box · 64 + window cell) · 2 + entered through the -x face) · 81 + patterns
        code = slot("code", sidx)
        q = torch.floor(code * (1.0 / 81.0))
        pats = code - q * 81.0
        bpat = torch.floor(pats * (1.0 / 9.0))
        upat = pats - bpat * 9.0
        code = torch.floor(q * 0.5)
        front = q - code * 2.0
        box = torch.floor(code * (1.0 / 64.0))
        cell = code - box * 64.0
        # Row bands decided per column and box (see _slot_patterns): below ``under`` a wall
        # shows its under pattern (tyres and underbody, a building's ground floor), between
        # the band rows its band pattern (glass, lamps); buildings have windows above.
        vc = v_f + 0.5
        under = _step(vc - slot("under", sidx))
        band_top = slot("band_top", sidx)  # a building keeps its 1 / floor height here (< 0: no windows)
        band = _step(vc - band_top) * _step(slot("band_bottom", sidx) - vc)
        fz = (oz_i + A * dz_i) * band_top  # height in floors on a building's wall
        window = (
            _step(upat - (_P_FLOOR0 - 0.5)) * _step(band_top) * (1.0 - under) * _within(torch.frac(fz) - 0.55, 0.28)
        )
        lit_p = per_row(sc["lit_windows"])
        lit = window * _step(lit_p - torch.frac(torch.floor(fz) * 0.6180 + cell * 0.7548 + box * 0.5698))
        pattern = under * upat + band * bpat + window * (_P_WINDOW + lit * (_P_LIT - _P_WINDOW))
        side_pos = _step(u_f - (W // 2 - 0.5))  # columns right of centre see walls facing +y
        normal = wall * (1.0 - front) * (2.0 - side_pos) + zface * (4.0 - below_i)
        box_entry = ((n_f * B + box) * _NORMALS + normal) * _PATTERNS + pattern * wall

        # ---------------------------------------------------------- ground and sky, per row
        dzr = dz[:, :, None]
        oyr, ozr = oy[:, None, None], oz[:, None, None]
        below = (dzr < 0).float()  # (N, H, 1)
        gdist = (ozr / (-dzr).clamp(min=1e-9)).clamp(max=GROUND_FAR)
        ground_row = below * _step(GROUND_FAR - 1.0 - gdist)
        depth = (ground_row * gdist + (1.0 - ground_row) * SKY_DEPTH).expand(N, H, W).contiguous()
        depth.view(-1).index_copy_(0, pix, t_box)
        r0 = int(torch.floor(cy.min()).clamp(0, H - 1))  # the first row that can see the ground
        gd, gr = gdist[:, r0:], ground_row[:, r0:]
        gclass = self._ground_class(sc, gd, oyr + gd * self.dy)  # (N, H - r0, W)
        shadow = self._ground_shadow(bx, sc, gd, gr, N, H - r0, W)
        # table entries: per scene the ground classes × (lit, shadow), then its sky
        scene_base = N * B * _NORMALS * _PATTERNS + torch.arange(N, device=dev, dtype=torch.float32) * _SCENE_ENTRIES
        sky_entry = (scene_base + _SKY_ENTRY)[:, None, None]
        entry = sky_entry.expand(N, H, W).contiguous()
        ground_entry = scene_base[:, None, None] + gclass * 2.0 + shadow
        entry[:, r0:] = ground_entry + (sky_entry - ground_entry) * (1.0 - gr)
        entry.view(-1).index_copy_(0, pix, box_entry)
        entry = entry.long().view(-1)

        # ---------------------------------------------------------- colour and labels
        table = self._table(bx, sc, self._object_shadow(bx, sc))
        rgb = table[0].index_select(0, entry).view(N, H, W)  # r · 65536 + g · 256 + b
        r = torch.floor(rgb * (1.0 / 65536.0))
        rgb -= r * 65536.0
        g = torch.floor(rgb * (1.0 / 256.0))
        colour = [r, g, rgb.sub_(g * 256.0)]  # one N×H×W tensor per channel: small tensors stay in cache
        r1 = min(int(torch.ceil(cy.max())) + 1, H)  # rows that can see the sky
        sky_here = (1.0 - hit[:, :r1]) * (1.0 - ground_row[:, :r1])
        sky = self._sky(sc, N, r1, W)
        for i, c in enumerate(colour):
            top = c[:, :r1]
            top += (sky[:, i] - top) * sky_here
        wet_idx = torch.nonzero(sc["wet"] > 0).flatten()
        if wet_idx.numel():
            self._reflect(colour, wet_idx, cy, gclass, hit, gr, sc["wet"], dz, r0)
        # fog (the sky is hazy already): per row on the ground, per pixel on boxes
        fog = (1.0 - torch.exp(depth * -sc["fog"][:, None, None])) * (hit + (1.0 - hit) * ground_row)
        fog_col = _col(sc, "fog") * 255.0
        for i, c in enumerate(colour):
            c += (fog_col[:, i, None, None] - c) * fog
        rain_idx = torch.nonzero(sc["rain"] > 0).flatten()
        if rain_idx.numel():
            self._rain(colour, rain_idx, sc, H, W)
        if out is None:
            out = Frames(
                images=torch.empty(N, 3, H, W, dtype=torch.uint8, device=dev),
                semantic=torch.empty(N, H, W, dtype=torch.long, device=dev),
                depth=torch.empty(N, H, W, device=dev),
                instances=torch.empty(N, H, W, dtype=torch.long, device=dev),
            )
        for i, c in enumerate(colour):
            out.images[:, i].copy_(c.mul_(self.finish).clamp_(0.0, 255.0))  # truncated to uint8
        labels = table[1].index_select(0, entry).view(N, H, W)  # semantic id + 32 · instance
        inst = torch.floor(labels * (1.0 / 32.0))
        out.semantic.copy_(labels.sub_(inst * 32.0))
        out.instances.copy_(inst)
        out.depth.copy_(depth)
        return out

    # ------------------------------------------------------------------ geometry

    def _columns(self, bx: dict[str, torch.Tensor], sc: dict[str, torch.Tensor], N: int, B: int):
        """Per column, the boxes that can cover it, sorted near-first (N×W×K), with a code
        (box, window cell, entry through the -x face, patterns), the entry and exit
        distances ``A``, ``B``, the z ranges (N×W×K×2) and the counts (N×W)."""
        dev = bx["x0"].device
        cam = self.camera
        W = cam.width
        f, near, cx = cam.focal, cam.near, W / 2.0
        x0, x1, y0, y1 = bx["x0"], bx["x1"], bx["y0"], bx["y1"]
        oy = sc["cam_y"]
        exists = (bx["material"] > 0) & (x1 > near) & (x0 <= x1)
        # screen columns each footprint spans (its corners, clipped to the near plane)
        xn = x0.clamp(min=near)
        a, b, c, d = (cx - f * (yc - oy[:, None]) / xc for xc in (xn, x1) for yc in (y0, y1))
        umin = torch.minimum(torch.minimum(a, b), torch.minimum(c, d))
        umax = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        G = (W + _BAND - 1) // _BAND
        band_lo = torch.arange(G, device=dev, dtype=torch.float32)[None, :, None] * _BAND
        in_band = exists[:, None, :] & (umax[:, None, :] >= band_lo - 1) & (umin[:, None, :] <= band_lo + _BAND + 1)
        slot, n_in = _compact(in_band)  # (N, G, K) box indices
        K = slot.shape[-1]
        slot = slot.contiguous()
        # box fields for the slots of each band, (N, G, 1, K), gathered in one go
        names: tuple[str, ...] = ("x0", "x1", "y0", "y1", "main", "rank")
        table = torch.stack([bx[k] for k in names])  # (F, N, B)
        got = torch.gather(table, 2, slot.view(1, N, G * K).expand(len(names), N, G * K))
        bandf = {k: got[i].view(N, G, 1, K) for i, k in enumerate(names)}

        # the columns of a band broadcast against its slots: (N, G, BAND, K)
        inv_dy = F.pad(self.inv_dy, (0, G * _BAND - W), value=1e6).view(1, G, _BAND, 1)
        oyc = oy[:, None, None, None]

        def entry(bx0, bx1, by0, by1):  # noqa: ANN001
            ta = (by0 - oyc) * inv_dy
            tb = (by1 - oyc) * inv_dy
            lo = torch.minimum(ta, tb)
            return torch.maximum(bx0, lo).clamp_(min=near), torch.minimum(bx1, torch.maximum(ta, tb)), bx0 >= lo

        A, Bt, front = entry(bandf["x0"], bandf["x1"], bandf["y0"], bandf["y1"])
        ok = (torch.arange(K, device=dev) < n_in[..., None])[:, :, None, :] & (A <= Bt)
        # Nearest first: a pixel shows the covering slot with the largest priority, which
        # packs nearness (the main box's entry distance, in cm; a part goes 1 cm before its
        # main box) and the slot's index after packing (below 64).  A part (``main`` -1)
        # is the box right after its main box, whose footprint holds the part's: where the
        # part is in a band so is the main box, in the slot just before it.
        Am = A - bandf["main"] * (F.pad(A, (1, 0))[..., :-1] - A)
        key = (Am * 100.0).clamp_(max=_PRIO_CM - 2.0).round_() - bandf["rank"]
        order, count = _compact(ok)  # the valid slots of each column, packed to the front
        Kc = order.shape[-1]
        if Kc >= 64:
            raise ValueError(f"{Kc} boxes can cover one column; the slot priority holds at most 63")

        def srt(t: torch.Tensor) -> torch.Tensor:  # (N, G, BAND, K) in slot order as (N, W, Kc)
            t = t.expand(N, G, _BAND, K) if t.shape[2] == 1 else t
            return torch.gather(t, 3, order).view(N, G * _BAND, Kc)[:, :W]

        A, Bt, front, key = srt(A), srt(Bt), srt(front), srt(key)
        box = srt(slot.view(N, G, 1, K))
        count = count.view(N, G * _BAND)[:, :W]
        # the box fields of every (column, slot), gathered in one go
        names = ("x0", "x1", "y0", "y1", "z0", "z1", "material", "a", "b_", "c")
        table = torch.stack([bx[k] for k in names])
        got = torch.gather(table, 2, box.reshape(1, N, W * Kc).expand(len(names), N, W * Kc))
        colf = {k: got[i].view(N, W, Kc) for i, k in enumerate(names)}
        bz = torch.stack((colf["z0"], colf["z1"]), -1)  # (N, W, Kc, 2)
        valid = (torch.arange(Kc, device=dev)[None, None, :] < count[..., None]).float()
        A = A * valid + (1.0 - valid) * 1e9
        prio = (_PRIO_CM - key) * 64.0 + torch.arange(Kc, device=dev, dtype=torch.float32)
        out = {"A": A, "B": Bt, "z": bz, "count": count, "z_in": torch.cat((bz[..., 1], bz[..., 0]), 2), "prio": prio}
        out.update(self._slot_patterns(sc, colf, box, front, A))
        return out

    def _slot_patterns(self, sc, colf, box, front, A) -> dict[str, torch.Tensor]:  # noqa: ANN001
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
        mat = colf["material"]
        x0, x1, y0, y1, z0, z1 = (colf[k] for k in ("x0", "x1", "y0", "y1", "z0", "z1"))
        pa, pb, pc = colf["a"], colf["b_"], colf["c"]
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

        inv_floor = torch.where(win_col, 1.0, -1.0) / pa.clamp(min=1.0)
        return {
            "code": ((box.float() * 64.0 + cell) * 2.0 + frontf) * 81.0 + upat + 9.0 * bpat,
            "under": row(under_z),
            "band_top": torch.where(bld, inv_floor, row(b1)),
            "band_bottom": torch.where(bld, torch.full_like(A, -1e4), row(b0)),
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
        a, b, c, d = z0 / A, z0 / Bt, z1 / A, z1 / Bt
        smin = torch.minimum(torch.minimum(a, b), torch.minimum(c, d))
        smax = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        lo = torch.ceil(cy - f * smax - 0.5).clamp_(min=0.0)
        hi = torch.floor(cy - f * smin - 0.5).clamp_(max=H - 1.0)
        empty = (hi < lo) | (A > 1e8)
        lo = torch.where(empty, torch.full_like(lo, -1e4), lo)
        hi = torch.where(empty, torch.full_like(hi, -1e4), hi)
        return lo.view(N * W, K), hi.view(N * W, K)

    def _ground_class(self, sc: dict[str, torch.Tensor], gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        """The ground class (`_G_*`) of each pixel's ground point (row distance ``gx``
        (N×H×1), lateral ``gy`` (N×H×W)).

        Along one row the layout only depends on a dozen yes/no facts about the row (is it
        before the junction, on a dashed stretch, on a zebra crossing…): the row's code.
        For each code the classes across the road are a lookup table over ``gy`` in 4 cm
        bins, built once per code (lazily; they depend on nothing else), so a pixel costs
        one lookup."""
        N, Hr, W = gy.shape
        code = self._row_code(sc, gx)  # (N, Hr, 1)
        rows = self._lut_rows(code)  # (N, Hr, 1): offset of the row's table
        bins = ((gy + _GY_RANGE) * (1.0 / _GY_STEP)).clamp_(0.0, _GY_BINS - 1.0).floor_()
        return self._glut.index_select(0, (bins + rows).long().view(-1)).view(N, Hr, W)

    def _row_code(self, sc: dict[str, torch.Tensor], gx: torch.Tensor) -> torch.Tensor:
        R, S = ROAD_HALF_WIDTH, SIDEWALK_WIDTH
        Lr = sc["road_length"][:, None, None]
        J1 = Lr + 2 * R
        junction = sc["junction"][:, None, None]
        isX = _within(junction, 0.5)
        isL = _within(junction - 2.0, 0.5)
        turn = sc["turn"][:, None, None]
        before_j = _step(J1 - gx)
        cross = _step(gx - Lr) * before_j
        bits = (
            (before_j + isX).clamp_(max=1.0),  # the main road
            (_step(J1 + S - gx) + isX).clamp_(max=1.0),  # its sidewalks
            cross,  # the side road
            _step(gx - (Lr - S)) * _step(J1 + S - gx),  # its sidewalks
            (_step(Lr - 5.2 - gx) + isX * _step(gx - J1 - 5.2)).clamp_(max=1.0),  # lane markings
            _step(0.36 - torch.frac(gx * (1.0 / 9.0))),  # a dash of a dashed line
            _within(gx - (Lr - 4.9), 0.25),  # the stop line
            (_within(gx - (Lr - 2.4), 1.7) + isX * _within(gx - (J1 + 2.4), 1.7)).clamp_(max=1.0),  # zebra
            cross * _within(torch.frac(gx * (1.0 / 1.2)) - 0.5, 0.25),  # a stripe of the side road's zebras
            _step(0.1 - torch.frac(gx * 0.5)),  # a joint between sidewalk slabs
            isL * _step(turn),  # an L turning left
            isL * _step(-turn),  # an L turning right
        )
        code = bits[0].round()
        for i, b in enumerate(bits[1:], 1):
            code = code + b.round() * float(1 << i)
        return code

    def _lut_rows(self, code: torch.Tensor) -> torch.Tensor:
        """Table offsets (floats) of row codes, adding the tables of codes not seen yet."""
        icode = code.long()
        new = [int(c) for c in torch.unique(icode).tolist() if int(self._gcode_row[int(c)]) < 0]
        if new:
            bits = (
                (torch.tensor(new, device=self.device)[:, None] >> torch.arange(12, device=self.device)) & 1
            ).float()
            start = self._glut.numel() // _GY_BINS
            self._glut = torch.cat((self._glut, _lateral_classes(bits, self._gy_bins).reshape(-1)))
            self._gcode_row[torch.tensor(new, device=self.device)] = torch.arange(
                start, start + len(new), device=self.device
            )
        return self._gcode_row[icode].float() * float(_GY_BINS)

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
        # ground that can be seen: nearer than SHADOW_FAR and, at a T or L, before the row
        # of buildings across the end of the road
        end = (sc["road_length"] + 2 * ROAD_HALF_WIDTH + SIDEWALK_WIDTH + 2.5)[:, None]
        end = end + 1e6 * (sc["junction"][:, None] < 0.5).float()
        seen = ground_row[:, :, 0] * _step(SHADOW_FAR - g) * _step(end - g)
        rowvalid = F.pad(seen, (0, pad)).view(N, Gr, _ROW_BAND).amax(-1)
        band_lo, band_hi = gb.amin(-1), gb.amax(-1).clamp(max=SHADOW_FAR)
        # y range of each shadow, and the y range a band of rows can show: the screen's
        # width at that distance, and only the street between the building rows before
        # the junction (and after an X)
        myb = my[:, None]
        sy_lo = torch.minimum(y0 - z0 * myb, y0 - z1 * myb)
        sy_hi = torch.maximum(y1 - z0 * myb, y1 - z1 * myb)
        oy = sc["cam_y"][:, None]
        half_w = band_hi * (cx / f) + 1.0
        Lr = sc["road_length"][:, None]
        wall = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + 2.5
        street = (band_hi < Lr - SIDEWALK_WIDTH) | (
            (band_lo > Lr + 2 * ROAD_HALF_WIDTH + SIDEWALK_WIDTH) & (sc["junction"][:, None] == 0)
        )
        vis_lo = torch.where(street, torch.maximum(oy - half_w, torch.full_like(half_w, -wall)), oy - half_w)
        vis_hi = torch.where(street, torch.minimum(oy + half_w, torch.full_like(half_w, wall)), oy + half_w)
        m = (
            (bx["material"] > 0)[:, None, :]
            & (rowvalid[:, :, None] > 0)
            & (sx_hi[:, None, :] >= band_lo[:, :, None])
            & (sx_lo[:, None, :] <= band_hi[:, :, None])
            & (sy_hi[:, None, :] >= vis_lo[:, :, None])
            & (sy_lo[:, None, :] <= vis_hi[:, :, None])
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
        okr = row_ok & (s_hi >= s_lo) & (ihi >= ilo) & (seen[:, :, None] > 0)
        # valid slots first, so that the paint loop sees a prefix
        order, count = _compact(okr)
        ilo, ihi = torch.gather(ilo, 2, order), torch.gather(ihi, 2, order)
        Kc = order.shape[-1]
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
        nears, fars = [], []
        for i, (lo_k, hi_k) in enumerate((("x0", "x1"), ("y0", "y1"), ("z0", "z1"))):
            lo = torch.gather(bx[lo_k], 1, casters)[:, None, :]
            hi = torch.gather(bx[hi_k], 1, casters)[:, None, :]
            inv_i = inv[:, i, None, None]
            ta, tb = (lo - p[i]) * inv_i, (hi - p[i]) * inv_i
            nears.append(torch.minimum(ta, tb))
            fars.append(torch.maximum(ta, tb))
        # the slab test: the ray is inside the box between the last entry and the first exit
        tn, tf = torch.stack(nears).amax(0), torch.stack(fars).amin(0)
        blocked = ok & (tf >= tn) & (tf > 0)
        out[:, :n_car] = blocked.any(-1).float() * (bx["inst"][:, :n_car] > 0).float()
        return out

    # ------------------------------------------------------------------ colour

    def _table(self, bx: dict[str, torch.Tensor], sc: dict[str, torch.Tensor], obj_shadow: torch.Tensor):
        """What a pixel shows, per table entry: its lit colour (r · 65536 + g · 256 + b, in
        0..255) and its labels (semantic id + 32 · car instance).  Entries: every box ×
        face direction × pattern, then every scene × ground class × (lit, in shadow).
        Returns 2 × entries (exact integers in float32)."""
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
        # ground: albedo × (ambient + sun) lit and in shadow (overcast: a contact shadow)
        galb = torch.tensor(_GROUND_ALBEDO, device=dev).t()[:, None, :].repeat(1, N, 1)  # (3, N, C)
        galb[:, :, _G_ROAD] *= sc["road_tone"]
        overcast = 1.0 - _step(sc["sun_r"] + sc["sun_g"] - 0.8)
        lit_g = amb_col + sun_col * sun[2][:, None]  # (3, N, 1)
        shade_g = amb_col * (1.0 - 0.5 * overcast)[:, None] + sun_col * (sun[2] * (1.0 - strength))[:, None]
        ground = galb[..., None] * torch.stack((lit_g, shade_g), -1)  # (3, N, C, 2)
        n_box = N * B * _NORMALS * _PATTERNS
        out = torch.empty(2, n_box + N * _SCENE_ENTRIES, device=dev)

        def pack(rgb: torch.Tensor) -> torch.Tensor:  # (3, …) in 0..1 → r · 65536 + g · 256 + b
            rgb = (rgb * 255.0).clamp_(0.0, 255.0).round_()
            return (rgb[0] * 256.0 + rgb[1]) * 256.0 + rgb[2]

        out[0, :n_box] = pack(box).view(-1)
        out[1, :n_box].view(N, B, -1)[:] = (bx["sem"] + 32.0 * bx["inst"])[:, :, None]
        scenes = out[:, n_box:].view(2, N, _SCENE_ENTRIES)
        scenes[0, :, :_SKY_ENTRY] = pack(ground).view(N, -1)
        scenes[0, :, _SKY_ENTRY] = 0.0  # the sky's colour is drawn per pixel
        gsem = torch.tensor(_GROUND_SEM, device=dev, dtype=torch.float32).repeat_interleave(2)
        scenes[1, :, :_SKY_ENTRY] = gsem
        scenes[1, :, _SKY_ENTRY] = float(L.SKY)
        return out

    def _sky(self, sc: dict[str, torch.Tensor], N: int, rows: int, W: int) -> torch.Tensor:
        """The sky seen by rows ``0..rows``, N×3×rows×W in 0..255: a gradient from the
        horizon to the zenith, clouds, and the sun when it is low enough to be seen.  All
        of it is smooth, so it is computed on a grid 4× coarser and upsampled."""
        dev = self.device
        f, H = self.camera.focal, self.camera.height
        hs, ws = (rows + 3) // 4, (W + 3) // 4
        # directions through the centres of the coarse cells (in fine pixel units)
        vs = torch.arange(hs, device=dev, dtype=torch.float32) * 4.0 + 2.0
        us = torch.arange(ws, device=dev, dtype=torch.float32) * 4.0 + 2.0
        dz = (-(vs[None, :] - (sc["horizon"] * H)[:, None]) / f)[:, :, None]  # (N, hs, 1)
        dy = (-(us - W / 2.0) / f)[None, None, :]  # (1, 1, ws)
        elev = (dz * torch.rsqrt(1.0 + dz * dz)).clamp(min=0.0)
        gfac = (elev * 2.2).clamp(max=1.0)
        gfac = gfac * (2.0 - gfac)
        # clouds: low-frequency value noise from the scene's seed, thinning toward the horizon
        seed = sc["seed"][:, None, None]
        coarse = _hash(
            torch.arange(6, device=dev, dtype=torch.float32)[None, :, None] * 1.7 + seed * 0.37,
            torch.arange(12, device=dev, dtype=torch.float32)[None, None, :] * 2.3 + seed * 0.71,
        )
        noise = F.interpolate(coarse[:, None], size=(hs, ws), mode="bilinear", align_corners=False)[:, 0]
        cl = sc["cloud"][:, None, None]
        cover = ((noise - (1.0 - cl)) * 3.0).clamp_(0.0, 1.0) * _step(elev - 0.01)
        cover = torch.maximum(cover, _step(cl - 0.95))
        # the sun: a disc and a glow
        sx, sy, sz = (sc[k][:, None, None] for k in ("sun_x", "sun_y", "sun_z"))
        cosang = ((sx + dy * sy + dz * sz) * torch.rsqrt(1.0 + dy * dy + dz * dz)).clamp_(min=0.0)
        glow = cosang * cosang
        glow = glow * glow
        glow = glow * glow  # cos^8
        g2 = glow * glow
        g2 = g2 * g2
        g2 = g2 * g2  # cos^64
        disc = ((cosang - 0.9990) * 3000.0).clamp_(0.0, 1.0)
        sun = (0.35 * glow + 0.6 * g2 + 2.0 * disc) * (1.0 - cover * 0.8)
        hor, zen, cloud, sun_col = (_col(sc, k)[:, :, None, None] * 255.0 for k in ("hor", "zen", "cloud", "sun"))
        sky = hor + (zen - hor) * gfac[:, None]
        sky = sky + (cloud * (0.85 + 0.3 * noise[:, None]) - sky) * cover[:, None] + sun_col * sun[:, None]
        sky = F.interpolate(sky, size=(4 * hs, 4 * ws), mode="bilinear", align_corners=False)
        return sky[:, :, :rows, :W]

    def _reflect(
        self,
        colour: list[torch.Tensor],
        idx: torch.Tensor,
        cy: torch.Tensor,
        gclass: torch.Tensor,
        hit: torch.Tensor,
        ground_row: torch.Tensor,
        wet: torch.Tensor,
        dz: torch.Tensor,
        r0: int,
    ) -> None:
        """Wet road: mirror what is above the horizon into the road below it (a
        screen-space reflection), in place, for the scenes ``idx`` and rows ``r0:``."""
        N, H, W = colour[0].shape
        v = self.rows[None, r0:, None]
        ripple = (self.grain[None, r0:] - 0.5) * 2.0
        mirror = (2.0 * cy.index_select(0, idx)[:, None, None] - v - 1.0 + ripple).round_().clamp_(0, H - 1).long()
        gc = gclass.index_select(0, idx)
        road = _step(1.5 - (gc - _G_ROAD).abs()) + 0.5 * _within(gc - 1.5, 0.6)  # road and paint; sidewalks half
        road *= (1.0 - hit.index_select(0, idx)[:, r0:]) * ground_row.index_select(0, idx)
        elev = (-dz.index_select(0, idx)[:, r0:, None]).clamp(min=0.0)
        k = road * (0.12 + 0.55 * (1.0 - (elev * 5.0).clamp(max=1.0))) * wet.index_select(0, idx)[:, None, None]
        for c in colour:
            sub = c.index_select(0, idx)
            refl = torch.gather(sub, 1, mirror)
            below = sub[:, r0:]
            below += (refl - below) * k
            c.index_copy_(0, idx, sub)

    def _rain(self, colour: list[torch.Tensor], idx: torch.Tensor, sc: dict[str, torch.Tensor], H: int, W: int):
        """Rain streaks (in place): the renderer's streak texture, shifted per scene."""
        shift = (sc["seed"].index_select(0, idx).long() % W).view(-1, 1, 1)
        cols = (self.cols.long()[None, None, :] + shift) % (2 * W)
        streak = torch.gather(self.streaks[None].expand(idx.numel(), H, 2 * W), 2, cols.expand(-1, H, W))
        amount = sc["rain"].index_select(0, idx)[:, None, None] * streak * 0.22
        for c in colour:
            sub = c.index_select(0, idx)
            sub += (204.0 - sub) * amount
            c.index_copy_(0, idx, sub)


def _col(sc: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """A scene colour field as (N, 3)."""
    return torch.stack((sc[f"{prefix}_r"], sc[f"{prefix}_g"], sc[f"{prefix}_b"]), -1)

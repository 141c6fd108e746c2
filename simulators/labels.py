"""The semantic label space: CARLA's ``CityObjectLabel`` ids (0.9.14+, Cityscapes-like).

Every simulator emits these ids so that models trained on one source are scored on
another without remapping by hand.  The table mirrors the installed ``carla`` module
(checked by a test when the ``carla`` extra is present).
"""

from __future__ import annotations

__all__ = [
    "LABELS",
    "LABEL_NAMES",
    "NUM_LABELS",
    "UNLABELED",
    "ROAD",
    "SIDEWALK",
    "BUILDING",
    "WALL",
    "FENCE",
    "POLE",
    "TRAFFIC_LIGHT",
    "TRAFFIC_SIGN",
    "VEGETATION",
    "TERRAIN",
    "SKY",
    "PEDESTRIAN",
    "RIDER",
    "CAR",
    "TRUCK",
    "BUS",
    "TRAIN",
    "MOTORCYCLE",
    "BICYCLE",
    "STATIC",
    "DYNAMIC",
    "OTHER",
    "WATER",
    "ROAD_LINE",
    "GROUND",
    "BRIDGE",
    "RAIL_TRACK",
    "GUARD_RAIL",
    "CITYSCAPES_TO_LTS",
    "LTS_TO_CITYSCAPES",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_EVAL_IDS",
    "PALETTE",
    "min_visible_pixels",
]

UNLABELED = 0
ROAD = 1
SIDEWALK = 2
BUILDING = 3
WALL = 4
FENCE = 5
POLE = 6
TRAFFIC_LIGHT = 7
TRAFFIC_SIGN = 8
VEGETATION = 9
TERRAIN = 10
SKY = 11
PEDESTRIAN = 12
RIDER = 13
CAR = 14
TRUCK = 15
BUS = 16
TRAIN = 17
MOTORCYCLE = 18
BICYCLE = 19
STATIC = 20
DYNAMIC = 21
OTHER = 22
WATER = 23
ROAD_LINE = 24
GROUND = 25
BRIDGE = 26
RAIL_TRACK = 27
GUARD_RAIL = 28

LABELS: dict[int, str] = {
    UNLABELED: "unlabeled",
    ROAD: "road",
    SIDEWALK: "sidewalk",
    BUILDING: "building",
    WALL: "wall",
    FENCE: "fence",
    POLE: "pole",
    TRAFFIC_LIGHT: "traffic_light",
    TRAFFIC_SIGN: "traffic_sign",
    VEGETATION: "vegetation",
    TERRAIN: "terrain",
    SKY: "sky",
    PEDESTRIAN: "pedestrian",
    RIDER: "rider",
    CAR: "car",
    TRUCK: "truck",
    BUS: "bus",
    TRAIN: "train",
    MOTORCYCLE: "motorcycle",
    BICYCLE: "bicycle",
    STATIC: "static",
    DYNAMIC: "dynamic",
    OTHER: "other",
    WATER: "water",
    ROAD_LINE: "road_line",
    GROUND: "ground",
    BRIDGE: "bridge",
    RAIL_TRACK: "rail_track",
    GUARD_RAIL: "guard_rail",
}
LABEL_NAMES: list[str] = [LABELS[i] for i in range(len(LABELS))]
NUM_LABELS: int = len(LABELS)

# Cityscapes labelIds (gtFine/*_labelIds.png) -> lts ids.  Ids not listed map to 0.
CITYSCAPES_TO_LTS: dict[int, int] = {
    4: STATIC,
    5: DYNAMIC,
    6: GROUND,  # ground
    7: ROAD,
    8: SIDEWALK,
    9: GROUND,  # parking
    10: RAIL_TRACK,
    11: BUILDING,
    12: WALL,
    13: FENCE,
    14: GUARD_RAIL,
    15: BRIDGE,
    17: POLE,
    18: POLE,  # polegroup
    19: TRAFFIC_LIGHT,
    20: TRAFFIC_SIGN,
    21: VEGETATION,
    22: TERRAIN,
    23: SKY,
    24: PEDESTRIAN,
    25: RIDER,
    26: CAR,
    27: TRUCK,
    28: BUS,
    31: TRAIN,
    32: MOTORCYCLE,
    33: BICYCLE,
}

# lts id -> the Cityscapes labelId an lts class is written (and scored) as: the first
# Cityscapes id mapping to it, road markings as road, 0 for classes Cityscapes lacks.
LTS_TO_CITYSCAPES: dict[int, int] = {}
for _cs, _lts in sorted(CITYSCAPES_TO_LTS.items()):
    LTS_TO_CITYSCAPES.setdefault(_lts, _cs)
LTS_TO_CITYSCAPES[ROAD_LINE] = 7  # road markings are part of the road in Cityscapes
for _lts in LABELS:
    LTS_TO_CITYSCAPES.setdefault(_lts, 0)
del _cs, _lts

# Cityscapes labelIds 0..33 -> (name, evaluated), as cityscapesscripts' helpers/labels.py
# (evaluated = not ignoreInEval: the 19 classes with a trainId).
CITYSCAPES_LABELS: dict[int, tuple[str, bool]] = {
    0: ("unlabeled", False),
    1: ("ego vehicle", False),
    2: ("rectification border", False),
    3: ("out of roi", False),
    4: ("static", False),
    5: ("dynamic", False),
    6: ("ground", False),
    7: ("road", True),
    8: ("sidewalk", True),
    9: ("parking", False),
    10: ("rail track", False),
    11: ("building", True),
    12: ("wall", True),
    13: ("fence", True),
    14: ("guard rail", False),
    15: ("bridge", False),
    16: ("tunnel", False),
    17: ("pole", True),
    18: ("polegroup", False),
    19: ("traffic light", True),
    20: ("traffic sign", True),
    21: ("vegetation", True),
    22: ("terrain", True),
    23: ("sky", True),
    24: ("person", True),
    25: ("rider", True),
    26: ("car", True),
    27: ("truck", True),
    28: ("bus", True),
    29: ("caravan", False),
    30: ("trailer", False),
    31: ("train", True),
    32: ("motorcycle", True),
    33: ("bicycle", True),
}
#: The 19 labelIds the Cityscapes benchmark averages.
CITYSCAPES_EVAL_IDS: tuple[int, ...] = tuple(i for i, (_, ev) in CITYSCAPES_LABELS.items() if ev)

# Colours for label images (Cityscapes' palette where the class exists there).
PALETTE: dict[int, tuple[int, int, int]] = {
    UNLABELED: (0, 0, 0),
    ROAD: (128, 64, 128),
    SIDEWALK: (244, 35, 232),
    BUILDING: (70, 70, 70),
    WALL: (102, 102, 156),
    FENCE: (190, 153, 153),
    POLE: (153, 153, 153),
    TRAFFIC_LIGHT: (250, 170, 30),
    TRAFFIC_SIGN: (220, 220, 0),
    VEGETATION: (107, 142, 35),
    TERRAIN: (152, 251, 152),
    SKY: (70, 130, 180),
    PEDESTRIAN: (220, 20, 60),
    RIDER: (255, 0, 0),
    CAR: (0, 0, 142),
    TRUCK: (0, 0, 70),
    BUS: (0, 60, 100),
    TRAIN: (0, 80, 100),
    MOTORCYCLE: (0, 0, 230),
    BICYCLE: (119, 11, 32),
    STATIC: (110, 190, 160),
    DYNAMIC: (170, 120, 50),
    OTHER: (55, 90, 80),
    WATER: (45, 60, 150),
    ROAD_LINE: (157, 234, 50),
    GROUND: (81, 0, 81),
    BRIDGE: (150, 100, 100),
    RAIL_TRACK: (230, 150, 140),
    GUARD_RAIL: (180, 165, 180),
}


def min_visible_pixels(height: int, width: int) -> int:
    """Pixels a car needs in a ``height``×``width`` frame to be counted: 0.4% of the frame
    (32 at 64×128), at least 4.  Below that its type cannot be told (KITTI's benchmarks
    likewise ignore boxes under a minimum height).  The renderer's counts and the counts
    read from a labelled directory use the same rule."""
    return max(4, round(32 * height * width / (64 * 128)))

"""The embedded procedural street-scene simulator (``simulators.make("procedural")``).

- `scene`: drawing a scene description (boxes, road layout, camera, weather) from ψ;
- `render`: the batched torch renderer (CPU or CUDA);
- `simulator`: `ProceduralSimulator`, the `Simulator` that ties them together and
  derives the labels (semantic ids, depth, instances, visible-car counts).

>>> from simulators.procedural import ProceduralSimulator
>>> sim = ProceduralSimulator(resolution=(64, 128))
>>> batch = sim.generate(sim.param_space.default(), 8, seed=0)
>>> batch.images.shape
torch.Size([8, 3, 64, 128])
"""

from .render import GROUND_FAR, SKY_DEPTH, Camera, Renderer
from .scene import CAR_SPECS, WEATHER_PRESETS, CarSpec, SceneBatch, WeatherPreset, sample_scenes
from .simulator import ProceduralSimulator, parse_resolution

__all__ = [
    "ProceduralSimulator",
    "parse_resolution",
    "Camera",
    "Renderer",
    "SKY_DEPTH",
    "GROUND_FAR",
    "CAR_SPECS",
    "CarSpec",
    "WEATHER_PRESETS",
    "WeatherPreset",
    "SceneBatch",
    "sample_scenes",
]

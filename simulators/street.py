"""The street-scene parameter space shared by the procedural renderer and CARLA, so
that a learned policy or a target file carries over between the two."""

from __future__ import annotations

from .space import Continuous, ParamSpace, Proportions

__all__ = ["WEATHERS", "INTERSECTIONS", "CAR_TYPES", "ROAD_LENGTH", "street_param_space"]

WEATHERS: tuple[str, ...] = ("clear_noon", "cloudy_noon", "hard_rain_noon", "clear_sunset")
INTERSECTIONS: tuple[str, ...] = ("X", "T", "L")
CAR_TYPES: tuple[str, ...] = ("sedan", "hatchback", "suv", "van", "truck")
# named here because CARLA's adapter needs its range outside a ψ (how far back to look for a camera)
ROAD_LENGTH = Continuous(20.0, 120.0, "road_length", doc="metres of road before the junction")


def street_param_space() -> ParamSpace:
    # Columns of orthogonal draws go first to the elements whose draws move the counting
    # reward most at the policy's start (README, "How the draws are laid out"): car types,
    # weather and the number of cars; junction shape and road length barely move it.
    # The weather is what changes how whole frames look: the loop's distribution-matching
    # warm-up moves it toward the target's look before the task's reward takes over.
    return (
        ParamSpace(
            weather=Proportions(WEATHERS, doc="weather preset of each scene (CARLA's names)"),
            intersection=Proportions(INTERSECTIONS, doc="shape of the junction ahead"),
            car_type=Proportions(CAR_TYPES, doc="type of each car placed"),
            cars_per_scene=Continuous(0.0, 16.0, doc="mean number of cars placed in a scene"),
            road_length=ROAD_LENGTH,
        )
        .prioritise("car_type", "weather", "cars_per_scene")
        .looks("weather")
        .contents("car_type", "cars_per_scene", "road_length")
    )

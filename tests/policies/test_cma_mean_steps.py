"""cma-mean's first step: a fixed ``sigma0``, or a step per coordinate (``steps``: a warm-up's
spread), capped at the default; ``spread`` reports σ × sqrt(diag C) in the same coordinates; a
categorical element's first generation, drawn evenly, moves its probabilities as drawn."""

from __future__ import annotations

import pytest

import simulators
from policies import make_strategy
from policies.cma_mean import SIGMA0


def _start(sim: str, **options):
    space = simulators.make(sim).param_space
    return make_strategy("cma-mean", space, seed=0, budget=64, batch=8, options=options)


def test_the_first_step_follows_the_steps_given_and_the_default_elsewhere():
    s = _start("gmm", steps={"c0_x": 0.01, "c1_y": 0.05, "std": 0.5})
    assert s.spread() == pytest.approx(
        {"c0_x": 0.01, "c0_y": SIGMA0, "c1_x": SIGMA0, "c1_y": 0.05, "std": SIGMA0, "balance:c0": SIGMA0}
    )  # std's 0.5 is capped at the default step: a warm-up that did not pin it leaves it there


def test_a_mixed_space_keeps_each_step_on_its_coordinate():
    """CatCMA orders continuous coordinates before integers; the steps follow their names."""
    s = _start("rings", steps={"stretch": 0.03, "mix:c1": 0.07})
    assert s.engine == "catcma"
    assert s.spread() == pytest.approx(
        {"rotation": SIGMA0, "radius": SIGMA0, "spread": SIGMA0, "stretch": 0.03, "mix:c0": SIGMA0, "mix:c1": 0.07}
    )


def test_sigma0_given_is_the_step_everywhere():
    s = _start("gmm", sigma0=0.05, steps={"c0_x": 0.01})
    assert list(s.spread().values()) == pytest.approx([0.05] * 6)
    assert list(_start("gmm").spread().values()) == pytest.approx([SIGMA0] * 6)  # neither: the default


def test_spread_shrinks_as_the_search_closes_in():
    s = _start("gmm")
    for _ in range(6):
        asked = s.ask(8)
        s.tell(asked, [-((p["c0_x"] + 2.0) ** 2) for p in asked])
    assert s.spread()["c0_x"] < SIGMA0


def test_a_screened_generation_moves_the_choice_it_ranks_first_up_from_a_tilted_start():
    # the start tilts toward ring (2/3); the first generation draws every layout in turn. One ring
    # draw ranks first, the other layouts' draws next and the other ring draws last: ring holds
    # about half of the ranking's weights, more than the 1/3 it was drawn with, less than its tilt.
    # Told as drawn (evenly), ring's probability becomes the highest; told against the tilt, the
    # layout ranked first fell below another (2/3 → 0.26 on a real run)
    space = simulators.make("rings").param_space
    init = {"layout": "ring", "rotation": 0.0, "radius": 2.0, "spread": 1.0, "stretch": 2}
    for seed in range(4):
        s = make_strategy("cma-mean", space, seed=seed, budget=80, batch=8, init=init, fixed=["mix"])
        assert s.describe()["params"]["layout"]["probs"][0] == pytest.approx(2 / 3)
        drawn = s.ask(8)
        rings = [i for i, p in enumerate(drawn) if p["layout"] == "ring"]
        others = [i for i, p in enumerate(drawn) if p["layout"] != "ring"]
        assert len(rings) >= 2 and {drawn[i]["layout"] for i in others} == {"line", "arc"}
        rewards = [0.0] * 8
        for rank, i in enumerate([rings[0], *others, *rings[1:]]):
            rewards[i] = -float(rank)
        s.tell(drawn, rewards)
        probs = s.describe()["params"]["layout"]["probs"]
        assert probs[0] == max(probs) and probs[0] > 0.45

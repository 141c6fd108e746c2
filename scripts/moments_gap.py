"""The moments' weather fit against targets with and without a camera model: the fit's
residual in standard errors, as a fraction of the choices' spread, and of the target's
distance from the uniform mix, with the total variation of the fitted mix from ψ*
(docs/experiments.md, 2026-12-07, "A warm-up that holds only what the target determines").

    python scripts/moments_gap.py configs/targets/default.yaml 'configs/targets/default.yaml@blur=0.7' DIR

Each argument is a target (a parameter file or a directory that ``lts.render`` wrote), with
``@SPEC`` a camera model (`lts.camera.parse_camera`) applied to its validation frames.
"""

from __future__ import annotations

import sys

import torch

import simulators
from lts.camera import parse_camera
from lts.matching import TargetMatch
from lts.targets import load_target
from policies.moments import mix_fit
from simulators import Batch


def _stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames' mean look features and their standard errors, as the moments take them."""
    frames = Batch(images=images)
    return TargetMatch(frames).mean_and_se(frames, "look")


def main(specs: list[str]) -> None:
    sim = simulators.make("procedural")
    space = sim.param_space
    init = space.default()
    choices = space["weather"].choices
    cols = []
    for c in choices:  # each weather alone, 32 scenes, as the default moments render it
        psi = space.validate({**init, "weather": {k: float(k == c) for k in choices}})
        cols.append(_stats(sim.generate(psi, 32, seed=11).images))
    m, se = torch.stack([c[0] for c in cols], 1), torch.stack([c[1] for c in cols], 1)
    centre = m.mean(1)
    spread = max(float((m[:, i] - centre).norm()) for i in range(m.shape[1]))
    for spec in specs:
        name, _, cam = spec.partition("@")
        tgt = load_target(name, sim, task_name="counting", size=256, run_seed=0, sim_name="procedural")
        images = parse_camera(cam)(tgt.batch.images, seed=1) if cam else tgt.batch.images
        t, tse = _stats(images)
        q, r = mix_fit(m, t)
        noise = float((tse.square().sum() + (se.square() @ q.square()).sum()).sqrt())
        truth = tgt.truth["weather"]
        tv = 0.5 * sum(abs(float(a) - truth[c]) for a, c in zip(q, choices))
        print(
            f"{spec}: residual {r / noise:.1f} se, {r / spread:.2f} of the spread, "
            f"{r / float((t - centre).norm()):.2f} of the target's distance; TV to ψ* {tv:.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

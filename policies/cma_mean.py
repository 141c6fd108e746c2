"""CMA-ES that hands over its *mean*, with learning-rate adaptation for noisy rewards.

Optuna's CMA-ES (`policies.optuna_search.CmaEs`) hands over the best ψ seen, which on a
noisy reward is the luckiest draw (the winner's curse).  The mean of the search
distribution averages over the whole population instead.  This strategy drives the
``cmaes`` package directly in unit coordinates (`policies.coords`), one generation per
batch: CMA-ES only ranks a generation's rewards, so the common data and training seeds
that the draws of a batch share in the loop cancel.  The hand-over is the average of
the means over the generations whose rewards cannot be told apart from the best one's, and
the last ``average`` (the mean wanders with each generation's noisy ranking).  ``lr_adapt`` turns on LRA-CMA-ES (Nomura et al., GECCO
2023), which lowers the mean and covariance learning rates when the signal-to-noise
ratio of the updates falls; on the Gaussian-mixture benchmarks (20 generations of 8) it
measured worse, so it is off by default.

Integer and categorical elements (a mixed space) are searched too, by one of two engines
(``mixed``): ``"catcma"`` (default) is the ``cmaes`` package's CatCMA with margin
(`cmaes.CatCMAwM`, Hamano et al. 2025): one Gaussian over the continuous coordinates and
the integers (whose margin keeps a step to the next integer alive), and a categorical
distribution per categorical element, moved together by the same ranking; ``"split"`` is
the numeric CMA-ES above (integers rounded) beside a CatCMA over the categorical elements
alone, both told the same ranking.  A space of continuous elements and mixes only runs
the numeric CMA-ES exactly as before either way.  A categorical element is handed over as
its most probable choice (probabilities averaged like the means); ``describe`` reports the
probabilities.  With ``init`` (a warm-up's ψ), a categorical element starts tilted toward
its ``init`` choice (`policies.coords.tilted_probs`), not at it: a wrong warm-up can be undone;
and the first generation draws every choice in turn (`_screened`), at the warm-up's values of
the other elements, and is told as drawn: its ranking, not the tilt, sets the probabilities
the search goes on with (`_drawn_uniformly`).

The first step: ``sigma0`` for every coordinate where it is given; else ``steps``, a step per
unit coordinate (a warm-up's spread, `spread`: how well it pinned each), capped at the default
step (`SIGMA0`), which the coordinates it does not name take (docs/experiments.md, 2026-12-07,
"One set of defaults").
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simulators.errors import UserError
from simulators.space import Categorical, Integer, ParamSpace

from .base import Strategy, asked_index, failed
from .coords import from_unit, tilted_probs, unit_names, unit_vector

__all__ = ["CmaMean", "SIGMA0"]

SIGMA0 = 0.2  # the first step in unit coordinates where neither sigma0 nor steps gives one


class CmaMean(Strategy):
    """CMA-ES in unit coordinates, a generation per batch; hands over the mean.  Integer and
    categorical elements by CatCMA (``mixed``, see the module docstring)."""

    name = "cma-mean"

    def __init__(
        self,
        space: ParamSpace,
        *,
        sigma0: float | None = None,
        steps: Mapping[str, float] | None = None,
        lr_adapt: bool = False,
        average: int = 4,
        mixed: str = "catcma",
        handover: str = "tied",
        **common: Any,
    ) -> None:
        super().__init__(space, **common)
        import cmaes  # a base dependency; imported here so that importing policies stays light

        if sigma0 is not None and not sigma0 > 0:
            raise UserError(f"search cma-mean: sigma0 must be > 0, got {sigma0}")
        if steps is not None and not all(float(v) > 0 for v in steps.values()):
            raise UserError(f"search cma-mean: steps must be > 0, got {dict(steps)}")
        if average < 1:
            raise UserError(f"search cma-mean: average must be >= 1, got {average}")
        if handover not in ("tied", "recent"):
            raise UserError(f"search cma-mean: handover must be 'tied' or 'recent', got {handover!r}")
        self.handover = handover
        if mixed not in ("catcma", "split"):
            raise UserError(f"search cma-mean: mixed must be 'catcma' or 'split', got {mixed!r}")
        self.lr_adapt, self.average, self.mixed = bool(lr_adapt), int(average), mixed
        self.cat_els = {n: el for n, el in self.free.items() if isinstance(el, Categorical)}
        self.cats = list(self.cat_els)
        has_int = any(isinstance(el, Integer) for el in self.free.values())
        # a space of continuous elements and mixes keeps the numeric CMA-ES exactly as it was
        self.engine = "cma" if not self.cats and (mixed == "split" or not has_int) else mixed
        # the numeric part searched in unit coordinates; "catcma" searches the categorical ones too
        self.searched = ParamSpace({n: el for n, el in self.free.items() if not isinstance(el, Categorical)})
        names = unit_names(self.searched)
        self.dim = len(names)
        # the first step per coordinate, as sigma0 × sqrt(diag C) (sigma0 the steps' root mean square)
        if sigma0 is not None:
            self.sigma0, cov = float(sigma0), np.eye(self.dim)
        else:
            step = np.array([min(float((steps or {}).get(c, SIGMA0)), SIGMA0) for c in names])
            self.sigma0 = float(np.sqrt(np.mean(step**2))) if self.dim else SIGMA0
            cov = np.diag((step / self.sigma0) ** 2)
        mean = np.clip(unit_vector(self.searched, {n: self.init[n] for n in self.searched}), 1e-3, 1 - 1e-3)
        self.popsize = max(int(self.batch or 8), 2)
        seed = self.seed & 0x7FFFFFFF
        self.es: Any = None  # the numeric CMA-ES ("cma", "split"), or the whole CatCMA ("catcma")
        self.cat: Any = None  # "split": the CatCMA of the categorical elements
        if self.engine != "catcma" and self.dim:
            with np.errstate(
                divide="ignore"
            ):  # a population of 2 (--quick): cmaes divides by c_mu = 0 once, harmlessly
                self.es = cmaes.CMA(
                    mean=mean,
                    sigma=self.sigma0,
                    bounds=np.tile([0.0, 1.0], (self.dim, 1)),
                    seed=seed,
                    population_size=self.popsize,
                    lr_adapt=self.lr_adapt,
                    cov=cov,
                )
        # CatCMA orders its coordinates continuous first, then integers
        is_int = [isinstance(self.searched[c.split(":")[0]], Integer) for c in names]
        self.x_idx = np.array([i for i, b in enumerate(is_int) if not b], dtype=int)
        self.z_idx = np.array([i for i, b in enumerate(is_int) if b], dtype=int)
        if self.cats:
            k = [len(self.cat_els[n].choices) for n in self.cats]
            q = np.zeros((len(k), max(k)))
            for i, n in enumerate(self.cats):
                q[i, : k[i]] = tilted_probs(self.cat_els[n], self.init[n] if self.has_init else None)
        if self.engine == "catcma":
            z_space = []
            for i in self.z_idx:
                el = self.searched[names[i]]
                assert isinstance(el, Integer)  # z_idx holds the integer coordinates only
                z_space.append([(v - el.low) / (el.high - el.low) for v in range(el.low, el.high + 1)])
            numeric = self.dim > 0
            order = np.concatenate([self.x_idx, self.z_idx])  # CatCMA's coordinates: continuous, then integers
            self.es = cmaes.CatCMAwM(
                x_space=[[0.0, 1.0]] * len(self.x_idx) if len(self.x_idx) else None,
                z_space=z_space or None,
                c_space=k if self.cats else None,
                population_size=self.popsize,
                # the step in unit coordinates, as the numeric CMA-ES's (CatCMA's default shrinks
                # it near a bound, where a warm-up often leaves an element)
                mean=np.concatenate([mean[self.x_idx], mean[self.z_idx]]) if numeric else None,
                sigma=self.sigma0 if numeric else None,
                cov=cov[np.ix_(order, order)] if numeric else None,
                cat_param=q if self.cats else None,
                seed=seed,
            )
        elif self.engine == "split":
            self.cat = cmaes.CatCMAwM(c_space=k, population_size=self.popsize, cat_param=q, seed=seed ^ 0x5A5A5A5)
        self._pending: list[tuple[Any, dict[str, Any]]] = []
        self._told: list[tuple[Any, float]] = []
        self.means: list[np.ndarray] = []  # the distribution's centre after each generation
        self.gen_rewards: list[float] = []  # each generation's mean reward (failures left out)

    def _psi(self, x: np.ndarray, cats: dict[str, str] | None = None) -> dict[str, Any]:
        if cats is None:  # the numeric engine: categorical elements stay at init
            cats = {n: self.init[n] for n in self.free if n not in self.searched}
        searched = from_unit(self.searched, x) if self.dim else {}
        return self.complete({**cats, **searched})

    def _choices(self, q: np.ndarray) -> dict[str, str]:
        """Each categorical element's most probable choice under ``q`` (one row each)."""
        return {
            n: self.cat_els[n].choices[int(np.argmax(q[i][: len(self.cat_els[n].choices)]))]
            for i, n in enumerate(self.cats)
        }

    def _draw(self) -> tuple[Any, dict[str, Any]]:
        """One point to evaluate: the engine's own draw (told back as is) and its ψ."""
        if self.engine == "cma":
            x = self.es.ask()
            return x, self._psi(x)
        if self.engine == "catcma":
            sol = self._screened(self.es.ask())
            u = np.empty(self.dim)
            u[self.x_idx] = sol.x if sol.x is not None else []
            u[self.z_idx] = sol.z if sol.z is not None else []
            c = sol.c if sol.c is not None else np.zeros((0, 0))
            return sol, self._psi(u, self._choices(c.astype(float)))
        x = self.es.ask() if self.es is not None else np.empty(0)
        sol = self._screened(self.cat.ask())
        return (x, sol), self._psi(x, self._choices(sol.c.astype(float)))

    def _screened(self, sol: Any) -> Any:
        """The first generation draws every choice of each categorical element in turn (in an
        order of the seed's), whatever the start favours: the ranking then sees each choice
        before the distribution commits (docs/experiments.md, 2026-12-07, "The plain config")."""
        asked = len(self._told) + len(self._pending)
        if self.means or asked >= self.popsize or sol.c is None:
            return sol
        c = np.zeros_like(sol.c)
        rng = np.random.default_rng([self.seed & 0x7FFFFFFF, 0x5C4EE2])
        for i, n in enumerate(self.cats):
            k = len(self.cat_els[n].choices)
            c[i, rng.permutation(k)[asked % k]] = 1
        return type(sol)(sol.x, sol.z, c, sol._v_raw)

    def _drawn_uniformly(self) -> None:
        """Before the screened generation is told: its choices were drawn evenly, not from the
        start's probabilities, so CatCMA's update (the ranked choices' weights less the
        probabilities they were drawn with) starts from uniform ones. From the tilted start, a
        choice that ranked first but held less of the weights than its tilt was pushed down
        (docs/experiments.md, 2026-12-07, "A screened generation told as drawn")."""
        engine = self.cat if self.engine == "split" else self.es
        for i, n in enumerate(self.cats):
            k = len(self.cat_els[n].choices)
            engine._q[i, :k] = 1.0 / k

    def ask(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            token, psi = self._draw()
            self._pending.append((token, psi))
            out.append(psi)
        return out

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        for p, r in zip(params, rewards):
            x, _ = self._pending.pop(asked_index([q for _, q in self._pending], p))
            # cmaes minimises; a failed draw ranks below every finite one of its generation
            self._told.append((x, float("inf") if failed(r) else -float(r)))
        while len(self._told) >= self.popsize:
            gen, self._told = self._told[: self.popsize], self._told[self.popsize :]
            finite = [v for _, v in gen if np.isfinite(v)]
            worst = max(finite) + 1.0 if finite else 0.0
            ranked = [(x, v if np.isfinite(v) else worst) for x, v in gen]
            if self.cats and not self.means:
                self._drawn_uniformly()
            if self.engine == "split":
                if self.es is not None:
                    self.es.tell([(x, v) for (x, _), v in ranked])
                self.cat.tell([(c, v) for (_, c), v in ranked])
            else:
                self.es.tell(ranked)
            self.means.append(self._snapshot())
            self.gen_rewards.append(-float(np.mean(finite)) if finite else float("nan"))

    def handover_generations(self) -> list[int]:
        """The generations whose centres the hand-over averages: the last ``average``, and every
        generation whose mean reward cannot be told apart from the best one's (within two
        standard deviations of a difference, estimated from successive generations)."""
        n = len(self.means)
        last = list(range(max(n - self.average, 0), n))
        rewards = np.array(self.gen_rewards, dtype=float)
        if self.handover == "recent" or len(rewards) != n or n <= self.average or not np.isfinite(rewards).all():
            return last  # a failed generation, or a checkpoint from before the rewards were kept
        # successive generations differ by noise (and by a trend, which only widens this)
        spread = float(np.sqrt(np.mean(np.diff(rewards) ** 2)))  # sd of a difference of two generations
        tied = np.flatnonzero(rewards >= rewards.max() - 2 * spread)
        return sorted(set(last) | {int(i) for i in tied})

    def spread(self) -> dict[str, float]:
        """σ × sqrt(diag C) per unit coordinate searched: the distribution's sd now."""
        if self.es is None or not self.dim:
            return {}
        sd = float(self.es._sigma) * np.sqrt(np.diag(self.es._C))
        if self.engine == "catcma":  # back from CatCMA's order (continuous, then integers)
            sd = sd[np.argsort(np.concatenate([self.x_idx, self.z_idx]))]
        return {c: float(v) for c, v in zip(unit_names(self.searched), sd)}

    def _snapshot(self) -> np.ndarray:
        """The search distribution's centre now: the numeric mean in unit coordinates (the
        `unit_names` order), then the categorical probabilities (one padded row each)."""
        if self.engine == "cma":
            return np.clip(self.es.mean, 0.0, 1.0)
        u = np.empty(self.dim)
        if self.engine == "catcma":
            m = self.es._mean if self.dim else np.empty(0)
            u[self.x_idx], u[self.z_idx] = m[: len(self.x_idx)], m[len(self.x_idx) :]
            q = self.es._q if self.cats else np.empty(0)
        else:
            u = self.es.mean if self.es is not None else u
            q = self.cat._q
        return np.concatenate([np.clip(u, 0.0, 1.0), np.asarray(q, dtype=np.float64).ravel()])

    def _centre(self) -> np.ndarray:
        # The mean wanders with the noise of each generation's ranking, and keeps wandering
        # along a ridge the reward cannot tell apart. Averaged over the generations whose
        # rewards cannot be told apart from the best, the wander shrinks and the hand-over
        # stays where the evaluations support it (docs/experiments.md, 2026-12-07).
        if not self.means:
            return self._snapshot()
        return np.mean([self.means[i] for i in self.handover_generations()], axis=0)

    def _probs(self, centre: np.ndarray) -> np.ndarray:
        return centre[self.dim :].reshape(len(self.cats), -1) if self.cats else np.zeros((0, 0))

    def recommend(self) -> dict[str, Any]:
        centre = self._centre()
        if self.engine == "cma":
            return self._psi(centre)
        return self._psi(centre[: self.dim], self._choices(self._probs(centre)))

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "sigma": None if self.es is None else float(self.es._sigma)}
        if self.engine != "cma":
            q = self._probs(self._centre())
            for i, n in enumerate(self.cats):
                p = q[i][: len(self.cat_els[n].choices)]
                out["params"][n]["probs"] = [float(v) for v in p / p.sum()]
            out["engine"] = self.engine
        return out

    def state_dict(self) -> dict[str, Any]:
        if self._pending:
            raise RuntimeError("state_dict() between ask() and tell()")
        # the attributes themselves: the cmaes package's pickle leaves out its generator and
        # stores the covariance compressed, so a resumed run would ask other points
        # (pickled: a checkpoint holds plain data, and the optimiser's arrays and generator are not)
        state: dict[str, Any] = {
            "es": None if self.es is None else vars(self.es),
            "told": list(self._told),
            "means": list(self.means),
            "gen_rewards": list(self.gen_rewards),
        }
        if self.cat is not None:
            state["cat"] = vars(self.cat)
        return {"pickle": pickle.dumps(state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = pickle.loads(state["pickle"])
        for attr in ("es", "cat"):
            if state.get(attr) is not None:
                obj = object.__new__(type(getattr(self, attr)))
                vars(obj).update(state[attr])
                setattr(self, attr, obj)
        self._told = list(state["told"])
        self.means = [np.array(m) for m in state["means"]]
        self.gen_rewards = [float(r) for r in state.get("gen_rewards", [])]
        self._pending = []

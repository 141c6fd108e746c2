"""Optuna's samplers as strategies, through Optuna's own ask/tell (library code, not
re-written): TPE, CMA-ES and Gaussian-process Bayesian optimisation.

ψ reaches Optuna as flat coordinates (`policies.coords`: proportions by stick breaking).
Each hands over the best ψ seen.  A sampler's random state is not kept in Optuna's
storage, so the checkpoint holds the pickled in-memory study (sampler included): a
resumed run asks exactly what an uninterrupted one would.  Start-up trials (drawn at
random before the model is fitted) are set explicitly and shown in ``describe``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.errors import UserError
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

from .base import Strategy, asked_index, failed
from .coords import coords_to_params, params_to_coords, stick_keys

__all__ = ["OptunaStrategy", "TPE", "CmaEs", "GP", "import_optuna"]

_HINT = 'pip install -e ".[ray]"'


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError(f"this search needs optuna: {_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def _distributions(space: ParamSpace) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Continuous):
            out[name] = FloatDistribution(el.low, el.high)
        elif isinstance(el, Integer):
            out[name] = IntDistribution(el.low, el.high)
        elif isinstance(el, Categorical):
            out[name] = CategoricalDistribution(list(el.choices))
        elif isinstance(el, Proportions):
            out.update({k: FloatDistribution(0.0, 1.0) for k in stick_keys(name, el)})
    return out


class OptunaStrategy(Strategy):
    """An Optuna study over the free elements, driven by ``study.ask`` / ``study.tell``."""

    def __init__(self, space: ParamSpace, **common: Any) -> None:
        super().__init__(space, **common)
        optuna = import_optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature notices (GPSampler)
            self.study = optuna.create_study(direction="maximize", sampler=self._sampler(optuna))
        if self.has_init:  # a warm-up's ψ is the first trial
            self.study.enqueue_trial(params_to_coords(self.free, {n: self.init[n] for n in self.free}))
        self._dists = _distributions(self.free)
        self._pending: list[tuple[Any, dict[str, Any]]] = []

    def _sampler(self, optuna: Any) -> Any:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {}

    def ask(self, n: int) -> list[dict[str, Any]]:
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(n):
                trial = self.study.ask(self._dists)
                psi = self.complete(coords_to_params(self.free, trial.params))
                self._pending.append((trial, psi))
                out.append(psi)
        return out

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        from optuna.trial import TrialState

        for p, r in zip(params, rewards):
            trial, _ = self._pending.pop(asked_index([q for _, q in self._pending], p))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if failed(r):
                    self.study.tell(trial, state=TrialState.FAIL)
                else:
                    self.study.tell(trial, float(r))

    def _best(self) -> tuple[dict[str, Any], float] | None:
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None
        t = max(done, key=lambda t: (t.value, -t.number))
        return self.complete(coords_to_params(self.free, t.params)), float(t.value)

    def recommend(self) -> dict[str, Any]:
        best = self._best()
        return best[0] if best is not None else dict(self.init)

    def describe(self) -> dict[str, Any]:
        best = self._best()
        return {**super().describe(), "options": self.options(), "best_reward": None if best is None else best[1]}

    def state_dict(self) -> dict[str, Any]:
        if self._pending:
            raise RuntimeError("state_dict() between ask() and tell()")
        return {"study": pickle.dumps(self.study)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.study = pickle.loads(state["study"])
        self._pending = []


def _startup(name: str, n: int) -> int:
    if n < 0:
        raise UserError(f"search {name}: n_startup_trials must be >= 0, got {n}")
    return int(n)


class TPE(OptunaStrategy):
    """Optuna's tree-structured Parzen estimator (multivariate)."""

    name = "tpe"

    def __init__(self, space: ParamSpace, *, n_startup_trials: int = 10, multivariate: bool = True, **common: Any):
        self.n_startup_trials, self.multivariate = _startup(self.name, n_startup_trials), bool(multivariate)
        super().__init__(space, **common)

    def _sampler(self, optuna: Any) -> Any:
        return optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials, multivariate=self.multivariate
        )

    def options(self) -> dict[str, Any]:
        return {"n_startup_trials": self.n_startup_trials, "multivariate": self.multivariate}


class CmaEs(OptunaStrategy):
    """Optuna's CMA-ES; a generation is ``popsize`` trials (default: the batch K), so it
    advances once per iteration."""

    name = "cmaes"

    def __init__(self, space: ParamSpace, *, popsize: int | None = None, sigma0: float | None = None, **common: Any):
        if popsize is not None and popsize < 2:
            raise UserError(f"search cmaes: popsize must be >= 2, got {popsize}")
        if sigma0 is not None and not sigma0 > 0:
            raise UserError(f"search cmaes: sigma0 must be > 0, got {sigma0}")
        self.popsize = popsize if popsize is not None else max(int(common.get("batch") or 4), 2)
        self.sigma0 = sigma0
        super().__init__(space, **common)

    def _sampler(self, optuna: Any) -> Any:
        kw: dict[str, Any] = {"seed": self.seed, "popsize": self.popsize, "n_startup_trials": 0}
        if self.sigma0 is not None:
            kw["sigma0"] = self.sigma0
        return optuna.samplers.CmaEsSampler(**kw)

    def options(self) -> dict[str, Any]:
        return {"popsize": self.popsize, "sigma0": self.sigma0}

    def unmoved(self) -> dict[str, str]:
        # Optuna's CmaEsSampler warns on each such trial; `ask` silences the repeats, this says it once
        return {
            n: "Optuna's CMA-ES samples categorical elements independently (uniformly at random), never by CMA"
            for n, el in self.free.items()
            if isinstance(el, Categorical)
        }


class GP(OptunaStrategy):
    """Optuna's Gaussian-process sampler (Bayesian optimisation, log-EI)."""

    name = "gp"

    def __init__(self, space: ParamSpace, *, n_startup_trials: int = 10, **common: Any):
        self.n_startup_trials = _startup(self.name, n_startup_trials)
        super().__init__(space, **common)

    def _sampler(self, optuna: Any) -> Any:
        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.n_startup_trials)

    def options(self) -> dict[str, Any]:
        return {"n_startup_trials": self.n_startup_trials}

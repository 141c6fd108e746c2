"""Where a run's evaluations happen: in this process (side by side in threads, or one after
another) or as Ray tasks, by the configuration (`make_executor`), and the places one run
uses (`Places`)."""

from __future__ import annotations

from simulators import Simulator

from .config import Config
from .evaluation import EvalContext, Evaluator, Executor, local_executor
from .rundir import RunDir

__all__ = ["make_executor", "Places"]


def make_executor(config: Config, context: EvalContext, sim: Simulator | None, run_dir: RunDir | None) -> Executor:
    """Ray when ``workers`` or ``ray_address`` asks for it (``parallel`` is then unused);
    else in this process, side by side in threads or one after another (`local_executor`).
    ``sim``: a simulator this process holds, which the evaluations share (or, with Ray, close);
    None: the context builds one."""
    if config.workers > 0 or config.ray_address:
        from .ray_exec import RayExecutor

        if sim is not None:
            sim.close()
        return RayExecutor(
            context,
            workers=max(config.workers, 1),
            address=config.ray_address,
            temp_dir=None if run_dir is None else str(run_dir.path.resolve()),
            timeout=config.eval_limit(ray=True),
            setup_timeout=config.setup_timeout or None,
        )
    return local_executor(
        context.build(sim=sim),
        parallel=config.parallel,
        threads=config.threads,
        samples=config.samples,
        timeout=config.eval_limit(ray=False),
    )


class Places:
    """Where a run's evaluations happen, each made when first asked for: an evaluator in this
    process that shares the run's simulator (`local`: renders only, before Ray may take the
    simulator) and the run's executor (`executor`, `make_executor`)."""

    def __init__(self, config: Config, context: EvalContext, sim: Simulator, run_dir: RunDir | None) -> None:
        self.config, self.context, self.sim, self.run_dir = config, context, sim, run_dir
        self._local: Evaluator | None = None
        self.made: Executor | None = None  # the executor, once made (kept after close: its counts)

    def local(self) -> Evaluator:
        if self._local is None:
            self._local = self.context.build(sim=self.sim)
        return self._local

    def executor(self) -> Executor:
        if self.made is None:
            self.made = make_executor(self.config, self.context, self.sim, self.run_dir)
        return self.made

    def close(self) -> None:
        """Close the executor (whose evaluator closes the shared simulator), or the simulator."""
        if self.made is not None:
            self.made.close()
        elif self._local is not None:
            self._local.close()
        else:
            self.sim.close()

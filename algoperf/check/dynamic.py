"""Dynamic checks: the submission is imported and run, with its API functions watched.

- `import`: the module imports and its functions pass the harness's own signature check.
- `batch_sizes`: `get_batch_size` answers for every workload (variants fall back to their base).
- `smoke_mnist1d`: a real trial through `algoperf.runner.train_once` on mnist1d; the train loss
  of the last eval must be below the first's.
- `step:<workload>`: a few update steps on synthetic data, driven here without evals (an eval of
  a large workload's synthetic splits would cost minutes on a CPU and checks nothing about the
  submission): data_selection, update_params twice, prepare_for_eval if defined, update_params.
- `param_shapes`, `train_state`, `host_sync_observed`: what the watch on update_params saw in all
  of the above (parameter shapes and dtypes before and after each call; writes to train_state,
  caught by a mapping that records them; device-to-host syncs made from submission lines).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import json
import os
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from algoperf import spec
from algoperf.check.report import CheckResult
from algoperf.check.source import CodeBase, Location
from algoperf.check.static import api_function

SMOKE_WORKLOAD = "mnist1d"
# The smoke run checks that the submission learns, not how fast: mnist1d's 60 s budget would end
# it early on a loaded machine (200 SGD steps took 70 s on this 2-core CPU shared with other jobs).
SMOKE_BUDGET_S = 7 * 24 * 3600.0
STEP_SEED = 0


# ---- the watch on the API functions ----------------------------------------------------------


class GuardedTrainState(dict):
    """A train_state whose writes are recorded (with the submission line) and not applied.

    The runner passes a read-only mapping; a write there fails the trial with a TypeError that
    says nothing of where. Recording instead lets the run go on and names the line.
    """

    def __init__(self, values: Any, on_write: Callable[[str], None]) -> None:
        super().__init__(values)
        self._on_write = on_write

    def __setitem__(self, key: Any, value: Any) -> None:
        self._on_write(f"train_state[{key!r}] = ...")

    def __delitem__(self, key: Any) -> None:
        self._on_write(f"del train_state[{key!r}]")

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self._on_write("train_state.update(...)")

    def pop(self, key: Any, *default: Any) -> Any:  # type: ignore[override]
        self._on_write(f"train_state.pop({key!r})")
        return self.get(key, *default)

    def popitem(self) -> Any:
        self._on_write("train_state.popitem()")
        return next(iter(self.items()))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._on_write(f"train_state.setdefault({key!r}, ...)")
        return self.get(key, default)

    def clear(self) -> None:
        self._on_write("train_state.clear()")


class Watch:
    """Wraps a loaded submission module's API functions for the duration of the dynamic checks."""

    SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")

    def __init__(self, code: CodeBase, framework: str) -> None:
        self.framework = framework
        self.files = {os.path.realpath(p) for p in code.modules}
        self._real: dict[str, bool] = {}
        self.context = ""  # the workload being run, for messages
        self.update_calls = 0
        self.checked_calls: dict[str, int] = {}
        self.train_state_writes: list[tuple[str, Location | None, str]] = []
        self.shape_problems: list[tuple[str, Location | None, str]] = []
        self.calls: dict[str, int] = {}  # update_params calls per context
        self.sync_calls: dict[tuple[Location, str], dict[str, set[int]]] = {}
        self.error_at: Location | None = None
        self._in_update = False

    # ---- locating submission lines ---------------------------------------------------------
    def _is_code(self, filename: str) -> bool:
        known = self._real.get(filename)
        if known is None:
            known = self._real[filename] = os.path.realpath(filename) in self.files
        return known

    def caller(self) -> Location | None:
        """The innermost submission line on the stack (the checker's own frames are skipped)."""
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None:
            if self._is_code(frame.f_code.co_filename):
                return Location(Path(frame.f_code.co_filename).resolve(), frame.f_lineno)
            frame = frame.f_back
        return None

    def innermost(self, tb: types.TracebackType | None) -> Location | None:
        found = None
        for frame, line in traceback.walk_tb(tb):
            if self._is_code(frame.f_code.co_filename):
                found = Location(Path(frame.f_code.co_filename).resolve(), line)
        return found

    # ---- wrapping ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self, module: types.ModuleType) -> Iterator[None]:
        names = [n for n in (*spec.SUBMISSION_FUNCTIONS, *spec.OPTIONAL_SUBMISSION_FUNCTIONS)
                 if callable(getattr(module, n, None))]
        originals = {n: getattr(module, n) for n in names}
        for n, fn in originals.items():
            setattr(module, n, self._wrap(n, fn))
        try:
            with self._sync_recorder():
                yield
        finally:
            for n, fn in originals.items():
                setattr(module, n, fn)

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        watch = self

        defined_at = _definition(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            returns_params = name in ("update_params", "prepare_for_eval")
            before = watch.param_signature(kwargs.get("current_param_container")) if returns_params else None
            if name == "update_params":
                if isinstance(kwargs.get("train_state"), types.MappingProxyType | dict):
                    where_written = watch._record_train_state_write
                    kwargs["train_state"] = GuardedTrainState(kwargs["train_state"], where_written)
                watch.update_calls += 1
                watch.calls[watch.context] = watch.calls.get(watch.context, 0) + 1
                watch._in_update = True
            try:
                out = fn(*args, **kwargs)
            except spec.TrainingCompleteError:
                raise
            except Exception as e:
                watch.error_at = watch.error_at or watch.innermost(e.__traceback__)
                raise
            finally:
                watch._in_update = False
            if returns_params:
                watch._check_return(name, before, out, defined_at)
            return out

        return wrapper

    def _record_train_state_write(self, what: str) -> None:
        self.train_state_writes.append((self.context, self.caller(), what))

    def _check_return(self, name: str, before: dict[str, Any] | None, out: Any,
                      where: Location | None) -> None:
        self.checked_calls[self.context] = self.checked_calls.get(self.context, 0) + 1
        if not isinstance(out, tuple) or len(out) != 3:
            self.shape_problems.append((self.context, where, f"{name} returned {type(out).__name__}, not "
                                        "the tuple (optimizer_state, params, model_state)"))
            return
        after = self.param_signature(out[1])
        if before is None or after is None:
            return
        missing = sorted(set(before) - set(after))
        added = sorted(set(after) - set(before))
        changed = [f"{k}: {before[k][0]} {before[k][1]} -> {after[k][0]} {after[k][1]}"
                   for k in before if k in after and before[k] != after[k]]
        if missing or added or changed:
            parts = []
            if missing:
                parts.append(f"lost {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
            if added:
                parts.append(f"gained {', '.join(added[:3])}{' ...' if len(added) > 3 else ''}")
            parts += changed[:3]
            self.shape_problems.append((self.context, where, f"{name} changed the parameters: "
                                        + "; ".join(parts)))

    def param_signature(self, params: Any) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """{name: (shape, dtype)} of a parameter container (a torch Module or a JAX pytree)."""
        if params is None:
            return None
        if self.framework == "pytorch":
            import torch

            if not isinstance(params, torch.nn.Module):
                return {"<container>": ((), type(params).__name__)}
            model = getattr(params, "module", params)
            return {n: (tuple(p.shape), str(p.dtype).removeprefix("torch.")) for n, p in model.named_parameters()}
        import jax

        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        return {jax.tree_util.keystr(path): (tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)))
                for path, x in leaves}

    # ---- host syncs (PyTorch) ----------------------------------------------------------------
    @contextlib.contextmanager
    def _sync_recorder(self) -> Iterator[None]:
        if self.framework != "pytorch":
            yield
            return
        import torch

        watch = self
        saved = {n: torch.Tensor.__dict__.get(n) for n in self.SYNC_METHODS}

        def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def method(tensor: Any, *args: Any, **kwargs: Any) -> Any:
                if watch._in_update:
                    frame = sys._getframe(1)
                    if watch._is_code(frame.f_code.co_filename):
                        where = Location(Path(frame.f_code.co_filename).resolve(), frame.f_lineno)
                        calls = watch.sync_calls.setdefault((where, name), {})
                        calls.setdefault(watch.context, set()).add(watch.calls[watch.context])
                return original(tensor, *args, **kwargs)

            return method

        for n in self.SYNC_METHODS:
            setattr(torch.Tensor, n, recording(n, getattr(torch.Tensor, n)))
        try:
            yield
        finally:
            for n, original in saved.items():
                if original is None:
                    delattr(torch.Tensor, n)
                else:
                    setattr(torch.Tensor, n, original)


def _definition(fn: Callable[..., Any]) -> Location | None:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return Location(Path(code.co_filename).resolve(), code.co_firstlineno) if code else None


# ---- hyperparameters for a run -----------------------------------------------------------------


def run_hyperparameters(source: Any, ruleset: str, workload: str) -> dict[str, Any] | None:
    """The point a run uses: None under self-tuning; else the submission's tuned point for the
    workload if it ships one, else trial 1 of its search space (as `algoperf run` picks)."""
    from algoperf import tuning

    if ruleset == "self":
        return None
    tuned = Path(source.path).parent / "tuned_hyperparameters.json"
    if tuned.exists():
        try:
            point = json.loads(tuned.read_text()).get(workload)
        except (json.JSONDecodeError, AttributeError):
            point = None
        if point is not None:
            return point
    if source.search_space is None:
        raise ValueError("external tuning needs a search space and the submission ships none")
    return tuning.sample(tuning.load_search_space(source.search_space), 1, STEP_SEED, workload, 0)


# ---- the checks ------------------------------------------------------------------------------


def check_import(source: Any, code: CodeBase) -> tuple[CheckResult, types.ModuleType | None]:
    from algoperf import submission as submission_lib

    result = CheckResult("import", "import", "the module imports and its functions match the API at run time")
    try:
        module = submission_lib.load(source)
    except Exception as e:  # noqa: BLE001 - an import that raises is this check's finding
        cause = getattr(e, "error", None) or e.__cause__ or e
        files = {p.resolve() for p in code.modules}
        where = None
        for frame in traceback.extract_tb(cause.__traceback__):
            if Path(frame.filename).resolve() in files:
                where = Location(Path(frame.filename).resolve(), frame.lineno or 1)
        if isinstance(cause, SyntaxError) and cause.filename and cause.lineno:
            where = Location(Path(cause.filename).resolve(), cause.lineno)
        result.fail(str(e), where or Location(Path(source.path), 1))
        return result, None
    result.note = f"imports as {module.__name__}"
    return result, module


def submission_batch_size(module: types.ModuleType, info: Any) -> int:
    """`get_batch_size` of a workload; a variant the submission does not know falls back to its
    base name (RULES.md, API), as the runner does."""
    try:
        return module.get_batch_size(info.name)
    except (ValueError, KeyError, NotImplementedError):
        if info.base_name == info.name:
            raise
        return module.get_batch_size(info.base_name)


def check_batch_sizes(code: CodeBase, module: types.ModuleType) -> CheckResult:
    """get_batch_size answers for every base workload; a variant may fall back to its base."""
    from workloads import registry

    result = CheckResult("batch_sizes", "import", "get_batch_size covers every workload")
    fn = api_function(code, "get_batch_size")
    where = fn.module.at(fn.node) if fn else Location(code.entry_path, 1)
    lacking_scored: list[str] = []
    lacking_dev: list[str] = []
    answered = 0
    for info in sorted(registry.all_workloads().values(), key=lambda i: i.name):
        try:
            size = submission_batch_size(module, info)
        except Exception as e:  # noqa: BLE001 - any error means "not covered"
            if not info.is_variant:
                (lacking_dev if info.development else lacking_scored).append(f"{info.name} ({type(e).__name__})")
            continue
        if not isinstance(size, int) or size <= 0:
            result.fail(f"get_batch_size({info.name!r}) returned {size!r}: expected a positive int", where)
        answered += 1
    if lacking_scored:
        result.fail(f"get_batch_size has no batch size for {', '.join(lacking_scored)}", where)
    if lacking_dev:
        result.warn(f"no batch size for the development workload(s) {', '.join(lacking_dev)}", where)
    result.note = f"{answered} workloads and variants answered"
    return result


def check_smoke(source: Any, watch: Watch, ruleset: str, steps: int, data: str) -> CheckResult:
    """A real trial on mnist1d through the runner: the loss must fall within `steps` steps."""
    from algoperf import logs, runner
    from workloads import registry

    result = CheckResult("smoke_mnist1d", "dynamic", f"a {steps}-step mnist1d trial runs and its loss falls")
    info = registry.get(SMOKE_WORKLOAD)
    if source.framework not in info.implementations:
        result.skipped = f"{source.framework} not supported yet: {SMOKE_WORKLOAD} has no {source.framework} implementation"
        return result
    try:
        hparams = run_hyperparameters(source, ruleset, SMOKE_WORKLOAD)
    except Exception as e:  # noqa: BLE001
        result.skipped = f"no hyperparameters to run with ({e})"
        return result
    watch.context = SMOKE_WORKLOAD
    watch.error_at = None
    with tempfile.TemporaryDirectory(prefix="algoperf-check-") as tmp:
        config = runner.TrialConfig(
            workload=SMOKE_WORKLOAD, submission=str(source.path), trial_dir=Path(tmp) / "smoke",
            framework=source.framework, hyperparameters=hparams, seed=STEP_SEED, data=data,
            max_steps=steps, eval_every=steps, stop_at="never", ruleset=ruleset,
            max_runtime=SMOKE_BUDGET_S,
        )
        start = time.perf_counter()
        trial = runner.train_once(config, progress=None)
        elapsed = time.perf_counter() - start
        rows = _eval_rows(Path(tmp) / "smoke" / logs.EVAL_FILE)
    if trial.status in ("error", "interrupted"):
        result.fail(f"the trial ended in {trial.status} at step {trial.global_step}: {trial.error}",
                    watch.error_at)
        return result
    losses = [(int(float(r["global_step"])), float(r["train/loss"])) for r in rows if r.get("train/loss")]
    if trial.status == "diverged":
        result.fail(f"the trial diverged (non-finite loss or parameters) by step {trial.global_step}")
    elif len(losses) < 2:
        result.fail(f"the trial ended ({trial.status}) at step {trial.global_step} with "
                    f"{len(losses)} eval(s): no loss curve to judge")
    elif not losses[-1][1] < losses[0][1]:
        result.fail(f"train loss did not fall: {losses[0][1]:.4f} at step {losses[0][0]} -> "
                    f"{losses[-1][1]:.4f} at step {losses[-1][0]}")
    else:
        result.note = (f"train loss {losses[0][1]:.3f} (step {losses[0][0]}) -> {losses[-1][1]:.3f} "
                       f"(step {losses[-1][0]}), {data} data, {elapsed:.1f} s")
    return result


def _eval_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_steps(source: Any, module: types.ModuleType, watch: Watch, ruleset: str, workload: str,
                batch_size: int) -> CheckResult:
    """A few update steps on synthetic data, as the runner would take them but without evals."""
    from algoperf import backends, tuning
    from algoperf import submission as submission_lib
    from algoperf.random_utils import prng_key, split, step_keys
    from workloads import registry

    result = CheckResult(f"step:{workload}", "dynamic", "synthetic-data steps run")
    info = registry.get(workload)
    if source.framework not in info.implementations:
        result.skipped = (f"{source.framework} not supported yet: {workload} has no {source.framework} "
                          f"implementation (workloads/{_package(info)}/{'jax' if source.framework == 'jax' else 'torch'}_workload.py)")
        return result
    need, free = memory_need_bytes(info, source.framework), available_memory_bytes()
    if free is not None and need > free:
        result.skipped = (f"needs about {need / 2**30:.1f} GiB (from its parameter count), "
                          f"{free / 2**30:.1f} GiB free")
        return result
    try:
        hparams = run_hyperparameters(source, ruleset, info.name)
    except Exception as e:  # noqa: BLE001
        result.skipped = f"no hyperparameters to run with ({e})"
        return result
    watch.context = workload
    watch.error_at = None
    start = time.perf_counter()
    stage = "set-up"
    try:
        backend = backends.get(source.framework)
        backend.seed_everything(STEP_SEED)
        wl = registry.load(info.name, source.framework, data="synthetic")
        wl.metrics_logger = None
        hp = tuning.as_hyperparameters(hparams) if hparams is not None else None
        try:
            size = submission_batch_size(module, info)
        except (ValueError, KeyError, NotImplementedError):
            # RULES.md: a development workload the submission does not know runs at its default.
            default = getattr(info, "default_batch_size", None)
            if not (info.development and default):
                raise
            size = int(default)
        size = min(size, batch_size) if batch_size > 0 else size
        data_rng, opt_rng, model_rng, rng = split(prng_key(STEP_SEED), 4)
        queue = wl.build_input_queue(data_rng, "train", None, size)
        model, model_state = wl.init_model_fn(model_rng, getattr(hp, "dropout_rate", None),
                                              getattr(hp, "aux_dropout_rate", None))
        stage = "init_optimizer_state"
        opt_state = module.init_optimizer_state(workload=wl, model_params=model, model_state=model_state,
                                                hyperparameters=hp, rng=opt_rng)
        train_state = {"validation_goal_reached": False, "test_goal_reached": False,
                       "is_time_remaining": True, "last_eval_time": 0.0, "training_complete": False,
                       "accumulated_submission_time": 0.0, "last_step_end_time": 0.0}
        extra = ({"train_state": types.MappingProxyType(train_state)}
                 if submission_lib.takes_train_state(module) else {})
        prepare = getattr(module, "prepare_for_eval", None)
        plan = ["update", "update", *(["prepare", "update"] if prepare else [])]
        step = 0
        for action in plan:
            select_rng, update_rng = step_keys(rng, step, 2)
            if action == "prepare" and prepare is not None:
                stage = "prepare_for_eval"
                opt_state, model, model_state = prepare(
                    workload=wl, current_param_container=model, current_params_types=wl.model_params_types,
                    model_state=model_state, hyperparameters=hp, loss_type=wl.loss_type,
                    optimizer_state=opt_state, eval_results=[], global_step=step, rng=select_rng)
                continue
            stage = f"data_selection (step {step})"
            batch = module.data_selection(workload=wl, input_queue=queue, optimizer_state=opt_state,
                                          current_param_container=model, model_state=model_state,
                                          hyperparameters=hp, global_step=step, rng=select_rng)
            stage = f"update_params (step {step})"
            opt_state, model, model_state = module.update_params(
                workload=wl, current_param_container=model, current_params_types=wl.model_params_types,
                model_state=model_state, hyperparameters=hp, batch=batch, loss_type=wl.loss_type,
                optimizer_state=opt_state, eval_results=[], global_step=step, rng=update_rng, **extra)
            step += 1
        finite = backend.params_finite(model)
    except spec.TrainingCompleteError:
        result.note = f"raised TrainingCompleteError in {stage}"
        return result
    except Exception as e:  # noqa: BLE001 - the submission's error is the finding
        where = watch.error_at or watch.innermost(e.__traceback__)
        result.fail(f"{stage} raised {type(e).__name__}: {e}", where)
        return result
    if not finite:
        result.fail(f"parameters are not finite after {step} steps on synthetic data")
    result.note = (f"{step} update_params{' + prepare_for_eval' if prepare else ''}, batch {size}, "
                   f"{time.perf_counter() - start:.1f} s")
    return result


def _package(info: Any) -> str:
    target = next(iter(info.implementations.values()), "workloads.?.x:Y")
    return target.split(":")[0].split(".")[1]


def memory_need_bytes(info: Any, framework: str) -> int:
    """A workload's memory need, from its parameter count (see algoperf.doctor)."""
    from algoperf import doctor

    return doctor.memory_need_bytes(info, framework)


def available_memory_bytes() -> int | None:
    from algoperf import doctor

    return doctor.available_memory_bytes()


def train_state_result(watch: Watch, takes_train_state: bool) -> CheckResult:
    result = CheckResult("train_state", "dynamic", "update_params never writes train_state")
    if not takes_train_state:
        result.note = "update_params does not take train_state"
        return result
    seen = set()
    for context, where, what in watch.train_state_writes:
        if (where, what) not in seen:
            seen.add((where, what))
            result.fail(f"{what} in update_params ({context}): train_state is read-only", where)
    if not seen:
        result.note = f"no write in {watch.update_calls} update_params calls"
    return result


def param_shapes_result(watch: Watch) -> CheckResult:
    result = CheckResult("param_shapes", "dynamic",
                         "update_params and prepare_for_eval return parameters of unchanged shapes and dtypes")
    seen = set()
    for context, where, what in watch.shape_problems:
        if (where, what) not in seen:
            seen.add((where, what))
            result.fail(f"{what} ({context})", where)
    if not seen:
        calls = ", ".join(f"{k} {v}" for k, v in watch.checked_calls.items())
        result.note = f"unchanged in every call ({calls})" if calls else ""
    return result


def host_sync_result(watch: Watch) -> CheckResult:
    """A sync made on most update steps is a warning; one every N steps (logging) is fine.

    Only the second half of each run's update calls is judged: the reference baselines log
    (and so sync) on each of the first 100 steps, then every 500, which is not a per-step cost.
    """
    result = CheckResult("host_sync_observed", "dynamic",
                         "no device-to-host sync from submission code on most update steps")
    if watch.framework != "pytorch":
        result.skipped = "observed only for PyTorch (the static host_sync check covers JAX)"
        return result
    occasional = []
    for (where, what), by_context in sorted(watch.sync_calls.items(),
                                            key=lambda kv: (str(kv[0][0].path), kv[0][0].line)):
        label = f"{what.strip('_')}(tensor)" if what.startswith("__") else f"tensor.{what}()"
        hits = sum(len(calls) for calls in by_context.values())
        late = sum(sum(1 for c in calls if c > watch.calls[ctx] / 2) for ctx, calls in by_context.items())
        late_total = sum(watch.calls[ctx] - int(watch.calls[ctx] / 2) for ctx in by_context)
        if hits >= 2 and late_total and late >= late_total / 2:
            result.warn(f"{label} syncs on {hits} of {sum(watch.calls[c] for c in by_context)} "
                        "update_params calls", where)
        else:
            occasional.append(f"{where.display()} ({hits}/{sum(watch.calls[c] for c in by_context)})")
    if occasional:
        result.note = f"occasional syncs only: {', '.join(occasional)}"
    elif not result.findings:
        result.note = f"none in {watch.update_calls} update_params calls"
    return result


def default_workloads(framework: str) -> list[str]:
    """The scored base workloads; those without a `framework` implementation are reported as
    skipped ("not supported yet") rather than left out silently."""
    from workloads import registry

    base = [i for i in registry.all_workloads().values() if not i.is_variant and not i.development]
    return sorted(i.name for i in base)


def run_dynamic(source: Any, code: CodeBase, ruleset: str, workloads: list[str] | None,
                smoke_steps: int, smoke_data: str, step_batch_size: int) -> list[CheckResult]:
    environment = dict(os.environ)
    try:
        return _run_dynamic(source, code, ruleset, workloads, smoke_steps, smoke_data, step_batch_size)
    finally:
        # A submission that sets variables (the env_vars check says so) leaves none behind.
        os.environ.clear()
        os.environ.update(environment)


def _run_dynamic(source: Any, code: CodeBase, ruleset: str, workloads: list[str] | None,
                 smoke_steps: int, smoke_data: str, step_batch_size: int) -> list[CheckResult]:
    from algoperf import submission as submission_lib

    imported, module = check_import(source, code)
    results = [imported]
    if module is None:
        for name in ("batch_sizes", "smoke_mnist1d", "param_shapes", "train_state", "host_sync_observed"):
            r = CheckResult(name, "dynamic" if name != "batch_sizes" else "import", "")
            r.skipped = "the module does not import"
            results.append(r)
        return results
    results.append(check_batch_sizes(code, module))
    watch = Watch(code, source.framework)
    with watch.installed(module):
        if smoke_steps > 0:
            results.append(check_smoke(source, watch, ruleset, smoke_steps, smoke_data))
        for name in (default_workloads(source.framework) if workloads is None else workloads):
            results.append(check_steps(source, module, watch, ruleset, name, step_batch_size))
    ran = watch.update_calls > 0
    for r in (param_shapes_result(watch), train_state_result(watch, submission_lib.takes_train_state(module)),
              host_sync_result(watch)):
        if not ran and r.skipped is None:
            r.findings.clear()
            r.skipped = "nothing ran (no smoke run, no workload steps)"
        results.append(r)
    return results

"""Static checks: what a submission's source may not do, found by reading it (no code runs).

Each check walks every module of the submission's code (`source.CodeBase`) and reports the file
and line of each violation. The rules are AlgoPerf's (RULES.md, API; the AlgoPerf rules document's
"Valid submissions"): a submission talks to the harness only through the API functions and the
workload's public interface; it may not read the clock, the logs, the eval data or the targets,
steer the harness through its environment, reach files outside its folder, or change the globals
of the harness or the frameworks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator

from algoperf import spec
from algoperf.check.report import CheckResult
from algoperf.check.source import (
    ClassRef,
    CodeBase,
    FunctionNode,
    FunctionRef,
    Module,
    ModuleRef,
    ancestors,
    enclosing_function,
)

# ---- the API ---------------------------------------------------------------------------------


def check_api(code: CodeBase) -> CheckResult:
    """The API functions exist with the reference's parameter names, in the reference's order."""
    result = CheckResult("api", "static", "API functions take the reference's parameters in order")
    found = []
    for name, params in {**spec.SUBMISSION_FUNCTIONS, **spec.OPTIONAL_SUBMISSION_FUNCTIONS}.items():
        required = name in spec.SUBMISSION_FUNCTIONS
        fn = api_function(code, name)
        if fn is None:
            if name in code.entry.imports or name in code.entry.assigned:
                result.warn(f"{name} is bound to {code.entry.imports.get(name, 'an expression')}, "
                            "outside the submission's code: its parameters cannot be read statically",
                            code.entry.at(code.entry.tree))
            elif required:
                result.fail(f"function {name}({', '.join(params)}) is missing; define it at module level",
                            code.entry.at(code.entry.tree))
            continue
        found.append(name)
        where = fn.module.at(fn.node)
        for problem in signature_problems(fn, params, allow_train_state=name == "update_params"):
            result.fail(f"{name}: {problem}", where)
    result.note = f"{', '.join(found)} match the reference" if found else ""
    return result


def api_function(code: CodeBase, name: str) -> FunctionRef | None:
    """The submission function the entry module exposes under `name`, wherever it is defined."""
    resolved = code.resolve_in(code.entry, name)
    return resolved if isinstance(resolved, FunctionRef) else None


def signature_problems(fn: FunctionRef, params: tuple[str, ...], allow_train_state: bool) -> list[str]:
    a = fn.node.args
    positional = fn.positional
    problems = []
    missing = [p for p in params if p not in fn.params]
    if missing and a.kwarg is None:
        problems.append(f"lacks parameter(s) {', '.join(missing)} (the reference's names: "
                        f"{', '.join(params)})")
    present = [p for p in positional if p in params]
    expected = [p for p in params if p in present]
    if present != expected:
        problems.append(f"parameters out of order: ({', '.join(positional)}); the reference's order is "
                        f"({', '.join(params)})")
    defaults = len(a.defaults)
    required_positional = positional[: len(positional) - defaults] if defaults else positional
    required_kwonly = [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    allowed = set(params) | ({"train_state"} if allow_train_state else set())
    extra = [p for p in (*required_positional, *required_kwonly) if p not in allowed]
    if extra:
        problems.append(f"requires parameter(s) {', '.join(extra)} the harness does not pass "
                        "(give them defaults or remove them)")
    if "train_state" in fn.params and not allow_train_state:
        problems.append("takes train_state, which the harness passes only to update_params")
    return problems


# ---- walking the code ------------------------------------------------------------------------


def nodes(code: CodeBase) -> Iterator[tuple[Module, ast.AST]]:
    for module in code.modules.values():
        for node in ast.walk(module.tree):
            yield module, node


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _root_name(expr: ast.expr) -> ast.Name | None:
    while isinstance(expr, ast.Attribute | ast.Subscript | ast.Call):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr if isinstance(expr, ast.Name) else None


def _aliases(fn: FunctionNode | None, name: str) -> set[str]:
    """`name` and the names a function assigns it to (`ts = train_state`)."""
    names = {name}
    if fn is None:
        return names
    changed = True
    while changed:
        changed = False
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in names:
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id not in names:
                        names.add(t.id)
                        changed = True
    return names


def _is_named(expr: ast.expr, name: str) -> bool:
    """Whether an expression is the variable `name` of its function (or an alias of it)."""
    if not isinstance(expr, ast.Name):
        return False
    return expr.id in _aliases(enclosing_function(expr), name)


# ---- private workload members, eval data, targets -------------------------------------------

# The workload's internals and everything that would let a submission see eval data or targets.
PRIVATE_WORKLOAD_MEMBERS = {
    "_build_input_queue": "builds the harness's input pipeline itself",
    "build_input_queue": "builds an input pipeline itself (data_selection gets the harness's)",
    "eval_model": "runs the harness's evaluation",
    "_eval_model": "runs the harness's evaluation",
    "_eval_model_on_split": "evaluates on a split itself",
    "_eval_iters": "reads the eval iterators",
    "eval_split_batches": "reads eval-split batches",
    "split_arrays": "reads a split's arrays directly",
    "real_split": "reads a split's arrays directly",
    "synthetic_split": "reads a split's arrays directly",
    "_split_cache": "reads the cached splits",
    "validation_target_value": "reads the validation target",
    "test_target_value": "reads the test target",
    "has_reached_validation_target": "asks whether the validation target is reached",
    "has_reached_test_target": "asks whether the test target is reached",
}
EVAL_SPLITS = ("validation", "test", "eval_train", "imagenet_v2")
# Harness modules a submission may import: the contract and the reference's helper modules.
# The harness's internals. A submission may import the contract and the reference's helper
# modules (algoperf.spec, pytorch_utils, jax_utils, jax_sharding_utils, param_utils, random_utils),
# not the runner, the tuner or the workload implementations (the reference keeps them in
# algoperf.workloads; here they are the top-level `workloads` package).
HARNESS_INTERNALS = ("workloads", "algoperf.workloads", "algoperf.runner", "algoperf.tuning",
                     "algoperf.cli", "algoperf.datasets", "algoperf.metadata", "algoperf.backends",
                     "algoperf.submission", "algoperf.experiment")


def check_private_access(code: CodeBase) -> CheckResult:
    result = CheckResult("private_access", "static",
                         "no private workload members, eval splits, targets or harness internals")
    for module, node in nodes(code):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            what = PRIVATE_WORKLOAD_MEMBERS.get(node.attr)
            on_workload = _is_named(node.value, "workload")
            if what is not None and (on_workload or not node.attr.startswith("_") or node.attr.startswith("_eval")):
                result.fail(f"accesses workload member .{node.attr}: {what}", module.at(node))
            elif on_workload and node.attr.startswith("_") and not node.attr.startswith("__"):
                result.fail(f"accesses private workload member workload.{node.attr}", module.at(node))
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "split" and _str(kw.value) in EVAL_SPLITS:
                    result.fail(f"asks for the {_str(kw.value)!r} split: eval data is the harness's",
                                module.at(node))
        target = _imports_module(node, module, HARNESS_INTERNALS)
        if target:
            result.fail(f"imports {target}: the harness's internals (a submission reaches the "
                        "workload only through the object passed in)", module.at(node))
    return result


def _import_targets(node: ast.Import | ast.ImportFrom, module: Module) -> list[str]:
    """Dotted targets of an import; `algorithmic_efficiency` (the package's name before 2025) is
    read as `algoperf`."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    elif node.level:
        return []
    else:
        targets = [f"{node.module}.{a.name}" for a in node.names]
    return [re.sub(r"^algorithmic_efficiency(?=\.|$)", "algoperf", t) for t in targets]


def _imports_module(node: ast.AST, module: Module, prefixes: tuple[str, ...]) -> str | None:
    if isinstance(node, ast.Import | ast.ImportFrom):
        for target in _import_targets(node, module):
            if any(target == p or target.startswith(p + ".") for p in prefixes):
                return target
    return None


# ---- the clock ---------------------------------------------------------------------------------

CLOCK_FUNCTIONS = frozenset({
    "time.time", "time.time_ns", "time.perf_counter", "time.perf_counter_ns", "time.monotonic",
    "time.monotonic_ns", "time.process_time", "time.process_time_ns", "time.thread_time",
    "time.thread_time_ns", "time.clock_gettime", "time.clock_gettime_ns", "time.localtime",
    "time.gmtime", "time.ctime", "datetime.datetime.now", "datetime.datetime.utcnow",
    "datetime.datetime.today", "datetime.date.today", "timeit.default_timer",
    "torch.cuda.Event", "os.times", "resource.getrusage",
})
CLOCK_MODULES = ("algoperf.clock", "algoperf.runner")


def check_clock(code: CodeBase) -> CheckResult:
    result = CheckResult("clock", "static", "no reading of the clock (time, datetime, CUDA events)")
    for module, node in nodes(code):
        if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            outer = getattr(node, "parent", None)
            if isinstance(outer, ast.Attribute) and outer.value is node:
                continue  # report the longest chain once (`datetime.datetime.now`)
            dotted = code.dotted(module, node)
            if dotted in CLOCK_FUNCTIONS:
                result.fail(f"reads the clock ({dotted}): a submission's decisions may not depend "
                            "on time (the budget is the harness's)", module.at(node))
        target = _imports_module(node, module, CLOCK_MODULES)
        if target:
            result.fail(f"imports {target}, the harness's clock", module.at(node))
    return result


# ---- the logs directory ----------------------------------------------------------------------

LOG_FILE_PATTERN = re.compile(
    r"eval_measurements\.csv|(?<![\w])measurements\.csv|events\.jsonl|summary\.json|hparams\.json|"
    r"flags_\d*\.json|meta_data_\d*\.json|checkpoints\.json|experiment\.json"
)
LOG_ATTRIBUTES = ("experiment_dir", "trial_dir", "log_dir", "logs_dir", "logging_dir")
LOG_MODULES = ("algoperf.logs", "algoperf.experiment", "algoperf.checkpoint", "algoperf.logger_utils")
METRICS_LOGGER_API = ("append_scalar_metrics",)


def check_logs_dir(code: CodeBase) -> CheckResult:
    result = CheckResult("logs_dir", "static", "no access to the logs directory or the harness's log files")
    for module, node in nodes(code):
        text = _str(node)
        if text is not None and LOG_FILE_PATTERN.search(text):
            result.fail(f"names the harness's log file {LOG_FILE_PATTERN.search(text).group(0)!r}",  # type: ignore[union-attr]
                        module.at(node))
        elif isinstance(node, ast.Attribute) and node.attr in LOG_ATTRIBUTES:
            result.fail(f"reads .{node.attr}: the logs directory is the harness's", module.at(node))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "metrics_logger" and node.attr not in METRICS_LOGGER_API):
            result.fail(f"uses metrics_logger.{node.attr}; only append_scalar_metrics is public",
                        module.at(node))
        target = _imports_module(node, module, LOG_MODULES)
        if target:
            result.fail(f"imports {target}, the harness's logging", module.at(node))
    return result


# ---- environment variables -------------------------------------------------------------------

HARNESS_ENV_PREFIXES = ("ALGOPERF_",)
ENV_WRITERS = ("os.putenv", "os.unsetenv")
ENVIRON_MUTATORS = ("update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__")


def check_env_vars(code: CodeBase) -> CheckResult:
    """Reading ordinary variables (RANK, LOCAL_RANK) is fine; ALGOPERF_* steer the harness, and
    setting any variable changes how the frameworks or later processes behave."""
    result = CheckResult("env_vars", "static",
                         "no ALGOPERF_* variables read and no environment variable set")
    for module, node in nodes(code):
        if isinstance(node, ast.Subscript) and code.dotted(module, node.value) == "os.environ":
            key = _str(node.slice)
            if isinstance(node.ctx, ast.Store | ast.Del):
                result.fail(f"sets environment variable {key or '(computed name)'}", module.at(node))
            else:
                _env_read(result, module, node, key)
        elif isinstance(node, ast.Call):
            func = code.dotted(module, node.func)
            if func in ("os.getenv", "os.environ.get"):
                _env_read(result, module, node, _str(node.args[0]) if node.args else None)
            elif func in ENV_WRITERS:
                result.fail(f"sets environment variable {_str(node.args[0]) if node.args else ''} ({func})",
                            module.at(node))
            elif (isinstance(node.func, ast.Attribute) and node.func.attr in ENVIRON_MUTATORS
                  and code.dotted(module, node.func.value) == "os.environ"):
                result.fail(f"changes the environment (os.environ.{node.func.attr})", module.at(node))
    return result


def _env_read(result: CheckResult, module: Module, node: ast.AST, key: str | None) -> None:
    if key is None:
        result.warn("reads an environment variable whose name is computed: cannot tell whether it "
                    "steers the harness", module.at(node))
    elif key.startswith(HARNESS_ENV_PREFIXES):
        result.fail(f"reads {key}, which steers the harness", module.at(node))


# ---- files -------------------------------------------------------------------------------------

FILE_FUNCTIONS = frozenset({
    "open", "io.open", "os.open", "os.listdir", "os.scandir", "os.walk", "os.remove", "os.unlink",
    "os.makedirs", "os.mkdir", "os.rename", "os.replace", "os.rmdir", "os.stat", "os.path.exists",
    "os.path.isfile", "os.path.isdir", "os.path.getsize", "glob.glob", "glob.iglob",
    "shutil.copy", "shutil.copyfile", "shutil.copytree", "shutil.rmtree", "shutil.move",
    "numpy.load", "numpy.save", "numpy.savez", "numpy.loadtxt", "numpy.fromfile", "numpy.memmap",
    "torch.load", "torch.save", "pathlib.Path", "pathlib.PurePath", "sqlite3.connect",
    "h5py.File", "pandas.read_csv", "subprocess.run", "subprocess.Popen", "subprocess.check_output",
    "subprocess.call", "os.system",
})
NETWORK_FUNCTIONS = frozenset({
    "urllib.request.urlopen", "urllib.request.urlretrieve", "requests.get", "requests.post",
    "socket.socket", "http.client.HTTPConnection", "http.client.HTTPSConnection",
})


def check_files(code: CodeBase) -> CheckResult:
    """Files are reached only inside the submission's folder, by paths built from `__file__`."""
    result = CheckResult("files", "static", "no files outside the submission folder, no network")
    for module, node in nodes(code):
        if not isinstance(node, ast.Call):
            continue
        func = code.dotted(module, node.func)
        if func in NETWORK_FUNCTIONS:
            result.fail(f"opens a network connection ({func})", module.at(node))
            continue
        if func not in FILE_FUNCTIONS:
            continue
        if func.startswith(("subprocess.", "os.system")):
            result.fail(f"runs a program ({func}): it could reach anything", module.at(node))
            continue
        arg = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg in ("file", "path", "f", "fname", "filename")), None
        )
        if func in ("pathlib.Path", "pathlib.PurePath"):
            arg = _path_chain(node)  # `Path(__file__).parent.parent / "x"`: judge the whole chain
            shown = ast.unparse(arg)
        else:
            shown = f"{func}({ast.unparse(arg) if arg is not None else ''})"
        verdict = classify_path(arg)
        if verdict == "outside":
            result.fail(f"{shown} reaches outside the submission folder", module.at(node))
        elif verdict == "cwd":
            result.fail(f"{shown} is relative to the working directory, not to the submission "
                        "folder; build the path from __file__", module.at(node))
        elif verdict == "unknown" and arg is not None:
            result.warn(f"{shown}: cannot tell statically where this path points", module.at(node))
    return result


def _path_chain(node: ast.expr) -> ast.expr:
    """The largest expression that keeps working on a path: attributes, method calls, `/`."""
    while True:
        up = getattr(node, "parent", None)
        if isinstance(up, ast.Attribute) and up.value is node:
            node = up
        elif isinstance(up, ast.Call) and (up.func is node or node in up.args) and isinstance(up.func, ast.Attribute):
            node = up
        elif isinstance(up, ast.BinOp) and isinstance(up.op, ast.Div) and up.left is node:
            node = up
        else:
            return node


def classify_path(arg: ast.expr | None) -> str:
    """'inside' (built from __file__ within its folder), 'outside', 'cwd' (a relative literal) or
    'unknown'."""
    if arg is None:
        return "unknown"
    literals = [n.value for n in ast.walk(arg) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    if any(".." in s.split("/") or s == ".." for s in literals):
        return "outside"
    if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(arg)):
        ups = sum(isinstance(n, ast.Attribute) and n.attr == "parent" for n in ast.walk(arg))
        ups += sum(isinstance(n, ast.Attribute) and n.attr == "parents" for n in ast.walk(arg)) * 2
        ups += sum(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "dirname"
                   for n in ast.walk(arg))
        return "outside" if ups > 1 else "inside"
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        s = arg.value
        return "outside" if s.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:", s) else "cwd"
    if isinstance(arg, ast.JoinedStr | ast.BinOp) and literals and literals[0].startswith(("/", "~")):
        return "outside"
    return "unknown"


# ---- monkeypatching ----------------------------------------------------------------------------

PROTECTED_PACKAGES = ("algoperf", "workloads", "torch", "jax", "jaxlib", "flax", "optax")
GLOBAL_SETTERS = frozenset({
    "jax.config.update", "torch.set_default_dtype", "torch.set_default_tensor_type",
    "torch.set_default_device", "torch.set_float32_matmul_precision", "torch.set_num_threads",
    "torch.set_num_interop_threads", "torch.set_flush_denormal", "torch.use_deterministic_algorithms",
})


def _protected(dotted: str | None) -> bool:
    return dotted is not None and dotted.split(".")[0] in PROTECTED_PACKAGES


def check_monkeypatch(code: CodeBase) -> CheckResult:
    result = CheckResult("monkeypatch", "static",
                         "no assignment to algoperf/torch/jax globals or to the workload object")
    for module, node in nodes(code):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        for t in targets:
            for leaf in ast.walk(t):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.ctx, ast.Store | ast.Del):
                    _patched(code, result, module, leaf.value, leaf.attr, leaf)
        if isinstance(node, ast.Call):
            func = code.dotted(module, node.func)
            if func in ("setattr", "delattr") and len(node.args) >= 2:
                _patched(code, result, module, node.args[0], _str(node.args[1]) or "(computed)", node)
            elif func in GLOBAL_SETTERS:
                result.fail(f"calls {func}, which changes a framework-wide setting the harness owns",
                            module.at(node))
    return result


def _patched(code: CodeBase, result: CheckResult, module: Module, owner: ast.expr, attr: str,
             node: ast.AST) -> None:
    resolved = code.resolve_expr(module, owner)
    dotted = resolved if isinstance(resolved, str) else None
    root = _root_name(owner)
    if _protected(dotted):
        package = dotted.split(".")[0]  # type: ignore[union-attr]
        result.fail(f"assigns {dotted}.{attr}: monkeypatching a global of {package}", module.at(node))
    elif root is not None and _is_named(root, "workload"):
        result.fail(f"assigns {ast.unparse(owner)}.{attr}: the workload object is the harness's",
                    module.at(node))


# ---- train_state -------------------------------------------------------------------------------

MAPPING_MUTATORS = ("update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__")


def check_train_state_writes(code: CodeBase) -> CheckResult:
    """RULES.md: train_state is passed read-only."""
    result = CheckResult("train_state_writes", "static", "train_state is never written")
    for module, node in nodes(code):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            if _is_named(node.value, "train_state"):
                result.fail(f"writes {ast.unparse(node)}: train_state is read-only", module.at(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in MAPPING_MUTATORS and _is_named(node.func.value, "train_state")):
            result.fail(f"calls train_state.{node.func.attr}(): train_state is read-only", module.at(node))
    return result


# ---- host syncs ------------------------------------------------------------------------------

SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "block_until_ready")
SYNC_FUNCTIONS = frozenset({"torch.cuda.synchronize", "jax.block_until_ready"})
SYNC_CONVERSIONS = frozenset({"jax.device_get", "numpy.asarray", "numpy.array", "float", "int", "bool"})
TENSOR_METHODS = ("sum", "mean", "norm", "max", "min", "abs", "dot", "std", "var", "all", "any")


def reachable(code: CodeBase, roots: list[FunctionRef]) -> list[FunctionRef]:
    """The submission functions a call from `roots` can reach (methods matched by name)."""
    seen: dict[FunctionRef, None] = {}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen[fn] = None
        for call in (n for n in ast.walk(fn.node) if isinstance(n, ast.Call)):
            stack.extend(callees(code, fn, call))
    return list(seen)


def callees(code: CodeBase, caller: FunctionRef, call: ast.Call) -> list[FunctionRef]:
    resolved = code.resolve_expr(caller.module, call.func)
    if isinstance(resolved, FunctionRef):
        return [resolved]
    if isinstance(resolved, ClassRef):
        return [m for m in (resolved.method("__init__"), resolved.method("__call__")) if m]
    if isinstance(call.func, ast.Attribute) and not isinstance(resolved, str | ModuleRef):
        if isinstance(call.func.value, ast.Name) and call.func.value.id == "self":
            cls = code.class_of(caller)
            m = cls.method(call.func.attr) if cls else None
            if m is not None:
                return [m]
        return code.methods_named(call.func.attr)
    return []


def _tensor_names(code: CodeBase, fn: FunctionRef) -> set[str]:
    """Names a function binds to values that look like tensors (model/loss outputs, framework calls)."""
    names: set[str] = set()
    for node in ast.walk(fn.node):
        if isinstance(node, ast.Assign) and _looks_like_tensor(code, fn.module, node.value, names):
            for t in node.targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _looks_like_tensor(code: CodeBase, module: Module, expr: ast.expr, names: set[str]) -> bool:
    for n in ast.walk(expr):
        if isinstance(n, ast.Name) and n.id in names:
            return True
        if isinstance(n, ast.Call):
            func = code.dotted(module, n.func)
            if func and func.split(".")[0] in ("torch", "jax", "jnp"):
                return True
            if isinstance(n.func, ast.Attribute) and n.func.attr in ("model_fn", "loss_fn", *TENSOR_METHODS):
                return True
    return False


def _periodic(node: ast.AST) -> bool:
    """Inside `if <step> % N == 0:` (or any test on the step with %): syncing every N steps is
    the usual way to log a loss and costs little (the baselines log every 100 steps)."""
    for a in ancestors(node):
        if isinstance(a, ast.If | ast.IfExp):
            if any(isinstance(b, ast.BinOp) and isinstance(b.op, ast.Mod) for b in ast.walk(a.test)):
                return True
    return False


def host_sync_sites(code: CodeBase, roots: list[FunctionRef]) -> list[tuple[FunctionRef, ast.AST, str, bool]]:
    """(function, node, what, periodic) for each device-to-host sync reachable from `roots`."""
    sites: list[tuple[FunctionRef, ast.AST, str, bool]] = []
    for fn in reachable(code, roots):
        tensors = _tensor_names(code, fn)
        for node in ast.walk(fn.node):
            if not isinstance(node, ast.Call):
                continue
            what = None
            func = code.dotted(fn.module, node.func)
            if isinstance(node.func, ast.Attribute) and node.func.attr in SYNC_METHODS and not node.args:
                what = f".{node.func.attr}()"
            elif func in SYNC_FUNCTIONS:
                what = f"{func}()"
            elif func in SYNC_CONVERSIONS and node.args and _looks_like_tensor(code, fn.module, node.args[0], tensors):
                what = f"{func}({ast.unparse(node.args[0])})"
            if what:
                sites.append((fn, node, what, _periodic(node)))
    return sites


def check_host_sync(code: CodeBase) -> CheckResult:
    """A sync in every update_params call stalls the device pipeline; periodic ones are allowed."""
    result = CheckResult("host_sync", "static", "no device-to-host sync on every step of update_params")
    roots = [f for f in (api_function(code, n) for n in ("update_params", "data_selection")) if f]
    periodic = []
    for fn, node, what, is_periodic in host_sync_sites(code, roots):
        where = fn.module.at(node)
        if is_periodic:
            if where.display() not in periodic:
                periodic.append(where.display())
        else:
            result.warn(f"{what} in {fn.qualname} syncs the device with the host on every step it runs",
                        where)
    if periodic:
        result.note = f"periodic syncs only (under a step % N test): {', '.join(periodic)}"
    return result


STATIC_CHECKS: tuple[Callable[[CodeBase], CheckResult], ...] = (
    check_api, check_private_access, check_clock, check_logs_dir, check_env_vars, check_files,
    check_monkeypatch, check_train_state_writes, check_host_sync,
)

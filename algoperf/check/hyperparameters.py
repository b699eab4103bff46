"""Which hyperparameters a submission reads, and whether they match its search space.

RULES.md (Tuning): under external tuning a submission ships `tuning_search_space.json` and reads
`hyperparameters.<name>`; under self-tuning it ships no search space and gets `hyperparameters=None`.
A name read but not in the space crashes (or silently takes a default) in every trial; a name in
the space but never read spends tuning trials on a knob that does nothing. Both are found by
following the `hyperparameters` argument of the API functions through the submission's code:

- `hp.name`, `getattr(hp, "name"[, default])`, `hp["name"]` read `name` (with a default: optional);
- passing `hp` to a submission function reads what that function reads of its parameter, with the
  key bound at the call site when the function takes the name as an argument (the baselines'
  `hp(hyperparameters, "learning_rate", 2e-3)`);
- `Wrapper(hp)` of a submission class makes a proxy: attributes read on it are reads, optional if
  the class supplies defaults through `__getattr__`;
- `hp._asdict()`, `vars(hp)` or a computed key read names that cannot be known statically (a warning).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from algoperf import tuning
from algoperf.check.report import CheckResult
from algoperf.check.source import ClassRef, CodeBase, FunctionRef, Location, Module, ancestors
from algoperf.check.static import api_function

# Keys the harness itself reads from the hyperparameters (the reference's submission_runner
# passes them to init_model_fn): in a search space without the submission reading them.
HARNESS_KEYS = frozenset({"dropout_rate", "aux_dropout_rate"})
DYNAMIC_ATTRS = ("_asdict", "_fields", "__dict__", "items", "keys", "values", "_replace")
API_WITH_HYPERPARAMETERS = ("init_optimizer_state", "update_params", "prepare_for_eval", "data_selection")


@dataclass(frozen=True)
class KeyParam:
    """A key that is the value of a parameter of the function being summarised (`name` in `hp`)."""

    name: str


@dataclass(frozen=True)
class Read:
    param: int  # index into the function's parameters
    key: str | KeyParam | None  # None: computed, unknown
    optional: bool
    where: Location


@dataclass(frozen=True)
class Tag:
    param: int
    optional: bool = False  # a proxy whose class gives defaults


class Analysis:
    """Per-function summaries of hyperparameter reads, computed on demand and memoised."""

    def __init__(self, code: CodeBase) -> None:
        self.code = code
        self._summaries: dict[FunctionRef, list[Read]] = {}
        self._active: set[FunctionRef] = set()

    def summary(self, fn: FunctionRef) -> list[Read]:
        if fn in self._summaries:
            return self._summaries[fn]
        if fn in self._active:  # recursion: what is known so far
            return []
        self._active.add(fn)
        try:
            reads = _FunctionReads(self, fn).run()
        finally:
            self._active.discard(fn)
        self._summaries[fn] = reads
        return reads

    def reads_of(self, fn: FunctionRef, param: str) -> list[Read]:
        if param not in fn.params:
            return []
        index = fn.params.index(param)
        return [r for r in self.summary(fn) if r.param == index]


class _FunctionReads:
    def __init__(self, analysis: Analysis, fn: FunctionRef) -> None:
        self.analysis = analysis
        self.code = analysis.code
        self.fn = fn
        self.module: Module = fn.module
        self.tags: dict[str, Tag] = {p: Tag(i) for i, p in enumerate(fn.params)}
        self.reads: list[Read] = []

    def run(self) -> list[Read]:
        body = self.fn.node
        # Aliases first (`h = hyperparameters`, `h = Wrapper(hyperparameters)`), to a fixed point.
        changed = True
        while changed:
            changed = False
            for node in ast.walk(body):
                if isinstance(node, ast.Assign):
                    tag = self.tag_of(node.value)
                    for t in node.targets:
                        if isinstance(t, ast.Name) and tag is not None and self.tags.get(t.id) != tag:
                            self.tags[t.id] = tag
                            changed = True
        for node in ast.walk(body):
            self.visit(node)
        return self.reads

    def at(self, node: ast.AST) -> Location:
        return self.module.at(node)

    def tag_of(self, expr: ast.expr | None) -> Tag | None:
        if isinstance(expr, ast.Name):
            return self.tags.get(expr.id)
        if isinstance(expr, ast.IfExp):
            return self.tag_of(expr.body) or self.tag_of(expr.orelse)
        if isinstance(expr, ast.Call):
            cls = self.code.resolve_expr(self.module, expr.func)
            if isinstance(cls, ClassRef):
                for arg in (*expr.args, *(k.value for k in expr.keywords)):
                    tag = self.tag_of(arg)
                    if tag is not None:
                        return Tag(tag.param, optional=tag.optional or cls.method("__getattr__") is not None)
        return None

    def add(self, tag: Tag, key: str | KeyParam | None, optional: bool, node: ast.AST) -> None:
        optional = optional or tag.optional or (isinstance(key, str) and _guarded(node, key))
        self.reads.append(Read(tag.param, key, optional, self.at(node)))

    def key_of(self, expr: ast.expr) -> str | KeyParam | None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.Name) and expr.id in self.fn.params:
            return KeyParam(expr.id)
        return None

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            tag = self.tag_of(node.value)
            if tag is None:
                return
            parent = getattr(node, "parent", None)
            if node.attr in DYNAMIC_ATTRS or (isinstance(parent, ast.Call) and parent.func is node
                                             and node.attr == "get"):
                if node.attr == "get" and isinstance(parent, ast.Call) and parent.args:
                    self.add(tag, self.key_of(parent.args[0]), len(parent.args) > 1, node)
                else:
                    self.add(tag, None, True, node)
            elif not node.attr.startswith("__"):
                self.add(tag, node.attr, False, node)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            tag = self.tag_of(node.value)
            if tag is not None:
                self.add(tag, self.key_of(node.slice), False, node)
        elif isinstance(node, ast.Call):
            self.visit_call(node)

    def visit_call(self, call: ast.Call) -> None:
        func = self.code.resolve_expr(self.module, call.func)
        if func in ("getattr", "hasattr") and len(call.args) >= 2:
            tag = self.tag_of(call.args[0])
            if tag is not None:
                self.add(tag, self.key_of(call.args[1]), func == "hasattr" or len(call.args) > 2, call)
            return
        if func == "vars" and call.args:
            tag = self.tag_of(call.args[0])
            if tag is not None:
                self.add(tag, None, True, call)
            return
        target, offset = self._callee(func)
        if target is None:
            return
        params = target.params
        bound: dict[str, ast.expr] = {}
        for i, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                break
            if i + offset < len(params):
                bound[params[i + offset]] = arg
        for kw in call.keywords:
            if kw.arg is not None:
                bound[kw.arg] = kw.value
        tagged = {name: tag for name, arg in bound.items() if (tag := self.tag_of(arg)) is not None}
        if not tagged:
            return
        for read in self.analysis.summary(target):
            pname = params[read.param]
            if pname not in tagged:
                continue
            key = read.key
            where = read.where
            if isinstance(key, KeyParam):
                # The key is an argument of this call: a literal here, or a parameter passed on.
                key = self.key_of(bound[key.name]) if key.name in bound else None
                where = self.at(call)
            tag = tagged[pname]
            self.reads.append(Read(tag.param, key, read.optional or tag.optional, where))

    def _callee(self, func: object) -> tuple[FunctionRef | None, int]:
        if isinstance(func, FunctionRef):
            return func, 1 if func.is_method and func.params[:1] == ["self"] else 0
        if isinstance(func, ClassRef):
            init = func.method("__init__")
            return init, 1
        return None, 0


def _guarded(node: ast.AST, key: str) -> bool:
    """Whether a read of `key` only happens when it exists: in the body of `if hasattr(hp, key)`
    (or `x if hasattr(hp, key) else d`), or under `try: ... except AttributeError` (the
    reference baselines read grad_clip and label_smoothing so)."""
    child = node
    for a in ancestors(node):
        if isinstance(a, ast.If | ast.IfExp) and (child in a.body if isinstance(a.body, list) else child is a.body):
            for n in ast.walk(a.test):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"
                        and len(n.args) == 2 and isinstance(n.args[1], ast.Constant) and n.args[1].value == key):
                    return True
        if isinstance(a, ast.Try) and child in a.body:
            for handler in a.handlers:
                names = [n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)] if handler.type else []
                if not names or {"AttributeError", "KeyError", "Exception"} & set(names):
                    return True
        child = a
    return False


def submission_reads(code: CodeBase) -> list[Read]:
    """Every hyperparameter read that starts from an API function's `hyperparameters` argument."""
    analysis = Analysis(code)
    reads: list[Read] = []
    seen = set()
    for name in API_WITH_HYPERPARAMETERS:
        fn = api_function(code, name)
        if fn is None:
            continue
        for r in analysis.reads_of(fn, "hyperparameters"):
            key = r.key if isinstance(r.key, str) else None
            if (key, r.optional, r.where) not in seen:
                seen.add((key, r.optional, r.where))
                reads.append(Read(r.param, key, r.optional, r.where))
    return reads


def _key_line(path: Path, key: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if f'"{key}"' in line:
            return i
    return 1


def check_search_space(code: CodeBase, ruleset: str, space_path: Path | None) -> CheckResult:
    result = CheckResult("search_space", "static",
                         "external: ships a valid tuning_search_space.json; self: ships none")
    if ruleset == "self":
        if space_path is not None:
            result.fail("a self-tuning submission ships no search space (RULES.md, Tuning); remove "
                        f"{space_path.name} or check it under --ruleset external", Location(space_path, 1))
        else:
            result.note = "no tuning_search_space.json, as self-tuning requires"
        return result
    if space_path is None:
        result.fail(f"no tuning_search_space.json next to {code.entry_path.name}: external tuning needs "
                    "one (RULES.md, Tuning), or check it under --ruleset self", Location(code.entry_path, 1))
        return result
    try:
        space = tuning.load_search_space(space_path)
    except tuning.SearchSpaceError as e:
        line = 1
        try:
            json.loads(space_path.read_text())
        except json.JSONDecodeError as je:
            line = je.lineno
        result.fail(str(e), Location(space_path, line))
        return result
    kind = "points" if isinstance(space, list) else "hyperparameters"
    result.note = f"{space_path.name} parses: {len(space)} {kind}"
    return result


def space_keys(space_path: Path) -> set[str] | None:
    try:
        space = tuning.load_search_space(space_path)
    except tuning.SearchSpaceError:
        return None
    if isinstance(space, list):
        return {k for point in space for k in point}
    return set(space)


def check_hyperparameters(code: CodeBase, ruleset: str, space_path: Path | None) -> CheckResult:
    result = CheckResult("hyperparameters", "static",
                         "the hyperparameters read match the search space's keys (both ways)")
    reads = submission_reads(code)
    if ruleset == "self":
        for r in reads:
            name = f"hyperparameters.{r.key}" if r.key else "the hyperparameters"
            result.fail(f"reads {name}: under self-tuning hyperparameters is None and a submission "
                        "reads none (RULES.md, Tuning)", r.where)
        if not reads:
            result.note = "reads no hyperparameters, as self-tuning requires"
        return result
    keys = space_keys(space_path) if space_path is not None else None
    if keys is None:
        result.skipped = "no valid search space to compare with (see search_space)"
        return result
    read_names = {r.key for r in reads if isinstance(r.key, str)}
    for r in reads:
        if r.key is None:
            result.warn("reads hyperparameters by a computed name: these keys cannot be checked "
                        "statically", r.where)
        elif r.key not in keys and not r.optional:
            result.fail(f"reads hyperparameters.{r.key}, which {space_path.name} does not define "  # type: ignore[union-attr]
                        "(every trial would fail); add it to the search space or read it with a default",
                        r.where)
    for key in sorted(keys - read_names - HARNESS_KEYS):
        result.fail(f"{key!r} is in the search space but the submission never reads it: tuning "
                    "trials would be spent on a knob that does nothing", Location(space_path, _key_line(space_path, key)))  # type: ignore[arg-type]
    defaulted = sorted({r.key for r in reads if isinstance(r.key, str) and r.optional and r.key not in keys})
    result.note = f"{len(keys & read_names)} keys read" + (
        f"; read with a default, not tuned: {', '.join(defaulted)}" if defaulted else "")
    return result

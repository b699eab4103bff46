"""A submission's source code as the checker sees it: the parsed modules and what names mean.

The code of a submission is its module file plus every module it imports from its own folder,
from the package tree it sits in (folders with `__init__.py`, imported the reference's way), or
from the repository's `submissions/` package (the baselines share helpers there); the harness
(`algoperf`, `workloads`) and installed packages are not submission code. Names are resolved the
way Python would: `import torch.nn.functional as F` makes `F.relu` mean `torch.nn.functional.relu`,
`from submissions.torch_training import hp` makes `hp` the function defined there. Nothing here
imports or runs the submission.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from algoperf.submission import SUBMISSIONS_ROOT

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Location:
    """A place in a file: what every finding points at."""

    path: Path
    line: int

    def display(self) -> str:
        return f"{display_path(self.path)}:{self.line}"


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies under it (shorter, copy-pastable)."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


@dataclass(eq=False)
class Module:
    """One parsed file of submission code."""

    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)  # local name -> dotted target
    functions: dict[str, FunctionNode] = field(default_factory=dict)  # "f", "Class.method"
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    assigned: dict[str, ast.expr] = field(default_factory=dict)  # module-level `name = expr`

    def at(self, node: ast.AST) -> Location:
        return Location(self.path, getattr(node, "lineno", 1))

    def __repr__(self) -> str:
        return f"Module({self.name!r}, {display_path(self.path)!r})"


@dataclass(frozen=True)
class FunctionRef:
    """A function (or method, `qualname` "Class.method") defined in submission code."""

    module: Module
    qualname: str
    node: FunctionNode

    @property
    def params(self) -> list[str]:
        a = self.node.args
        return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]

    @property
    def positional(self) -> list[str]:
        a = self.node.args
        return [p.arg for p in (*a.posonlyargs, *a.args)]

    @property
    def is_method(self) -> bool:
        return "." in self.qualname

    def __hash__(self) -> int:
        return hash((self.module.path, self.qualname))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FunctionRef) and (other.module.path, other.qualname) == (
            self.module.path, self.qualname
        )


@dataclass(frozen=True)
class ClassRef:
    module: Module
    name: str
    node: ast.ClassDef

    def method(self, name: str) -> FunctionRef | None:
        node = self.module.functions.get(f"{self.name}.{name}")
        return FunctionRef(self.module, f"{self.name}.{name}", node) if node else None


@dataclass(frozen=True)
class ModuleRef:
    module: Module


Resolved = FunctionRef | ClassRef | ModuleRef | str | None  # str: a dotted name outside the code


def _annotate_parents(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node  # type: ignore[attr-defined]


def parent(node: ast.AST) -> ast.AST | None:
    return getattr(node, "parent", None)


def ancestors(node: ast.AST) -> Iterator[ast.AST]:
    p = parent(node)
    while p is not None:
        yield p
        p = parent(p)


def enclosing_function(node: ast.AST) -> FunctionNode | None:
    for a in ancestors(node):
        if isinstance(a, FunctionNode):
            return a
    return None


def _index(module: Module) -> None:
    for stmt in module.tree.body:
        if isinstance(stmt, FunctionNode):
            module.functions[stmt.name] = stmt
        elif isinstance(stmt, ast.ClassDef):
            module.classes[stmt.name] = stmt
            for item in stmt.body:
                if isinstance(item, FunctionNode):
                    module.functions[f"{stmt.name}.{item.name}"] = item
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            module.assigned[stmt.targets[0].id] = stmt.value
    is_package = module.path.name == "__init__.py"
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    module.imports[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.name.split(".") if is_package else module.name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                if alias.name != "*":
                    module.imports[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name


class CodeBase:
    """The modules of one submission, parsed, with name resolution across them."""

    def __init__(self, entry: Path) -> None:
        self.entry_path = entry.resolve()
        self.folder = self.entry_path.parent
        # A submission inside a package tree may import helpers from anywhere in that tree.
        self.import_root, dotted = _package_root(self.entry_path)
        self.tree_root = self.import_root / dotted.split(".")[0] if "." in dotted else self.folder
        self.modules: dict[Path, Module] = {}
        self._by_name: dict[str, Module | None] = {}
        self.errors: list[tuple[Path, SyntaxError]] = []
        self.entry = self._parse(self.entry_path, _module_name(self.entry_path))
        done: set[Path] = set()
        queue = [self.entry]
        while queue:
            module = queue.pop()
            done.add(module.path)
            for target in sorted(set(module.imports.values())):
                found = self._module_for(target)
                if found is not None and found.path not in done and found not in queue:
                    queue.append(found)

    # ---- loading -----------------------------------------------------------------------------
    def _parse(self, path: Path, name: str) -> Module:
        if path in self.modules:
            return self.modules[path]
        text = path.read_text()
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as e:
            self.errors.append((path, e))
            tree = ast.Module(body=[], type_ignores=[])
        _annotate_parents(tree)
        module = Module(name=name, path=path, tree=tree)
        _index(module)
        self.modules[path] = module
        self._by_name[name] = module
        return module

    def is_submission_file(self, path: Path) -> bool:
        path = path.resolve()
        return (path.is_relative_to(self.folder) or path.is_relative_to(self.tree_root)
                or path.is_relative_to(SUBMISSIONS_ROOT.resolve()))

    def _module_for(self, dotted: str) -> Module | None:
        """The submission module an import target names (a module, or a module's attribute)."""
        found = self.module(dotted)
        if found is None and "." in dotted:
            found = self.module(dotted.rsplit(".", 1)[0])
        return found

    def module(self, dotted: str) -> Module | None:
        """The submission module named `dotted`, parsed on first use; None outside submission code."""
        if dotted in self._by_name:
            return self._by_name[dotted]
        found = None
        parts = dotted.split(".")
        roots = [self.folder, self.import_root, SUBMISSIONS_ROOT.parent]
        for root in roots:
            for path in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                if path.is_file() and self.is_submission_file(path):
                    found = self._parse(path.resolve(), dotted)
                    break
            if found:
                break
        self._by_name[dotted] = found
        return found

    # ---- names -------------------------------------------------------------------------------
    def resolve_dotted(self, dotted: str) -> Resolved:
        """What a fully dotted name means: a submission function/class/module, or itself."""
        m = self.module(dotted)
        if m is not None:
            return ModuleRef(m)
        if "." in dotted:
            head, attr = dotted.rsplit(".", 1)
            owner = self.resolve_dotted(head)
            if isinstance(owner, ModuleRef):
                return self.resolve_in(owner.module, attr, depth=1)
            if isinstance(owner, ClassRef):
                return owner.method(attr)
        return dotted

    def resolve_in(self, module: Module, name: str, depth: int = 0) -> Resolved:
        """What a module-level name of `module` refers to."""
        if name in module.functions and "." not in name:
            return FunctionRef(module, name, module.functions[name])
        if name in module.classes:
            return ClassRef(module, name, module.classes[name])
        if name in module.imports and depth < 8:
            return self.resolve_dotted(module.imports[name])
        if name in module.assigned and depth < 8:
            value = module.assigned[name]
            if isinstance(value, ast.Name | ast.Attribute):
                return self.resolve_expr(module, value, depth + 1)
        return None

    def resolve_expr(self, module: Module, expr: ast.expr, depth: int = 0) -> Resolved:
        """What a Name or Attribute chain evaluates to statically (None if not a known thing)."""
        if isinstance(expr, ast.Name):
            if _is_local(expr):
                return None
            resolved = self.resolve_in(module, expr.id, depth)
            if resolved is None and expr.id in BUILTIN_NAMES:
                return expr.id
            return resolved
        if isinstance(expr, ast.Attribute):
            owner = self.resolve_expr(module, expr.value, depth)
            if isinstance(owner, str):
                return f"{owner}.{expr.attr}"
            if isinstance(owner, ModuleRef):
                return self.resolve_in(owner.module, expr.attr, depth + 1)
            if isinstance(owner, ClassRef):
                return owner.method(expr.attr)
        return None

    def dotted(self, module: Module, expr: ast.expr) -> str | None:
        """The dotted name outside submission code that an expression names (`F.relu` ->
        `torch.nn.functional.relu`), or None."""
        resolved = self.resolve_expr(module, expr)
        return resolved if isinstance(resolved, str) else None

    def all_functions(self) -> Iterator[FunctionRef]:
        for module in self.modules.values():
            for qualname, node in module.functions.items():
                yield FunctionRef(module, qualname, node)

    def methods_named(self, name: str) -> list[FunctionRef]:
        return [f for f in self.all_functions() if f.is_method and f.qualname.split(".")[-1] == name]

    def class_of(self, fn: FunctionRef) -> ClassRef | None:
        if not fn.is_method:
            return None
        cls = fn.qualname.split(".")[0]
        return ClassRef(fn.module, cls, fn.module.classes[cls])


BUILTIN_NAMES = frozenset({
    "open", "getattr", "setattr", "delattr", "hasattr", "vars", "float", "int", "bool", "print",
    "globals", "exec", "eval", "__import__", "compile",
})


def _is_local(name: ast.Name) -> bool:
    """Whether a name is bound inside its enclosing functions (a parameter or an assignment)."""
    fn = enclosing_function(name)
    while fn is not None:
        if name.id in local_names(fn):
            return True
        fn = enclosing_function(fn)
    return False


def local_names(fn: FunctionNode) -> frozenset[str]:
    """The names a function binds: its parameters and every name it assigns (cached on the node)."""
    cached = getattr(fn, "_local_names", None)
    if cached is None:
        a = fn.args
        names = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
        names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg) and node is not fn:
                names.add(node.arg)
        cached = frozenset(names)
        fn._local_names = cached  # type: ignore[union-attr]
    return cached


def _package_root(path: Path) -> tuple[Path, str]:
    """(the folder on sys.path, the dotted module name) of a file, as the harness imports a
    submission: up through the folders that are packages (hold `__init__.py`)."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def _module_name(path: Path) -> str:
    return _package_root(path)[1]

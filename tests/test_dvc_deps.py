"""dvc.yaml lists what each stage's code reads, so that no output goes stale when code or params
change. Found statically (the project is parsed, never imported), for every stage in dvc.yaml:
each `foreach: ${section}` stage once per name in that section of params.yaml (as `dvc repro`
expands it), `${key}` and `${paths.x}` resolved from params.yaml.

Code. The module a stage's command runs (`python -m stages.x`) is followed through the project's
own imports, parsed with `ast` from stages/**/*.py:

- `import stages.a.b`, `from stages.a import b`, `from stages import a` and relative imports, at
  module level or inside a function; importing `stages.a.b` also runs `stages/__init__.py` and
  `stages/a/__init__.py`, so they count too. Imports under `if TYPE_CHECKING:` never run and do not
  count.
- A string constant that names a project module, e.g. `[sys.executable, "-m",
  "stages.measure.worker"]`, counts as an import: the subprocess runs that module.

Every file reached must lie under one of the stage's `deps` (a file, or a folder covering everything
under it), except a package `__init__.py` that holds nothing but a docstring (checked here, so a
line of code added to one makes it a dep) and the files in ALLOWED, each with its reason. And every
dep on project code must cover some file reached (otherwise it only makes the stage re-run).

Params. One rule, applied to every module reached. A name holds the validated params when it is
assigned from `config.load(...)` or `config.validate(...)` (stages.params under any alias) or is
a function parameter annotated `config.Params`. On such a name `p`:

- `p.<section>.<field>` reads `<section>.<field>`, and `p.<section>["x"]` reads `<section>.x`;
- `p.<section>[name]`, `name` not a constant, reads the stage's own item (`technique.${key}`) in a
  `foreach: ${<section>}` stage, and the whole section in any other stage;
- `name in p.<section>` and `list(p.<section>)` read only the section's names: nothing in a
  `foreach: ${<section>}` stage (dvc makes one stage per name), the whole section elsewhere;
- `p.<section>` passed as an argument to a project function that only ever reads fields of that
  parameter (`Protocol.from_bench(p.bench, p.budget, ...)`) reads `<section>.<each field>`;
- `p.<section>` used in any other way (passed on, `config.as_dict(p.bench)`) reads the whole
  section;
- `p.model_name` reads `model.name` (ALIASES); `p.paths` reads no params entry (UNTRACKED),
  since dvc.yaml interpolates the same paths into the stage's deps and outs;
- `p` passed to a project function whose parameter is annotated `config.Params` is followed there
  (that module is reached too); any other use of `p` cannot be followed and fails the test.

Every read must be covered by the stage's `params:`: a listed `bench` covers `bench.confidence`, a
listed `technique.${key}` covers that technique's options. The fix for any failure is in dvc.yaml:
add the dep or the params entry named in the message to that stage.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stages"
PARAMS_MODULE = f"{PACKAGE}.params"

# Project files a stage may run without listing them as deps: each cannot change any output.
ALLOWED: dict[str, str] = {
    "stages/cli.py": (
        "wraps each stage's main: a known error prints one line, exits 1; writes nothing"
    ),
}
# Attributes of stages.params.Params that are not sections of params.yaml: the key each reads.
ALIASES = {"model_name": "model.name"}
# Sections read without a params entry, and why that is safe.
UNTRACKED = {"paths": "dvc.yaml interpolates the same paths into every stage's deps and outs"}

ITEM, NAMES = "the stage's own item", "the names only"


@dataclass(frozen=True)
class Read:
    """One params read: `key` ("bench.confidence", "target"), how the section is read (ITEM,
    NAMES or plainly), and where (for the failure message)."""

    key: str
    how: str
    where: str


@dataclass
class Module:
    name: str  # dotted: stages.measure.timing
    rel: str  # relative to the root: stages/measure/timing.py
    tree: ast.Module
    package: str  # what relative imports resolve against
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    symbols: dict[str, str] = field(default_factory=dict)  # local name -> dotted qualified name

    @property
    def empty_init(self) -> bool:
        """A package marker holding nothing but (at most) a docstring."""
        return self.rel.endswith("__init__.py") and all(
            isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in self.tree.body
        )


@dataclass
class Stage:
    name: str  # as dvc names it: optimize@int8_dynamic
    module: str | None  # the project module its command runs
    deps: list[str]
    params: list[str]
    item_of: str | None = None  # the params section a foreach stage is made from
    key: str | None = None

    @property
    def base(self) -> str:
        return self.name.split("@")[0]


class Project:
    """The stages package of one checkout, parsed: imports and params reads per module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: dict[str, Module] = {}
        for path in sorted((root / PACKAGE).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            tree = ast.parse(path.read_text(), str(path))
            module = Module(
                name,
                path.relative_to(root).as_posix(),
                tree,
                name if is_package else name.rpartition(".")[0],
            )
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    module.parents[child] = node
            self.modules[name] = module
        for module in self.modules.values():
            module.symbols = self._symbols(module)
        self._imports: dict[str, set[str]] = {}
        self._reads: dict[str, tuple[list[Read], list[str]]] = {}

    # --- imports -----------------------------------------------------------------------------

    def _with_packages(self, dotted: str) -> set[str]:
        """A module and every package above it (importing it runs their __init__.py)."""
        parts = dotted.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & self.modules.keys()

    def _absolute(self, node: ast.ImportFrom, module: Module) -> str:
        if not node.level:
            return node.module or ""
        base = module.package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    def imports(self, name: str) -> set[str]:
        """The project modules that running module `name` imports directly."""
        if name not in self._imports:
            module, found = self.modules[name], set()
            for node in _runtime_nodes(module.tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        found |= self._with_packages(alias.name)
                elif isinstance(node, ast.ImportFrom):
                    base = self._absolute(node, module)
                    found |= self._with_packages(base)
                    found |= {f"{base}.{a.name}" for a in node.names} & self.modules.keys()
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith(f"{PACKAGE}.")
                    and node.value in self.modules
                ):
                    found |= self._with_packages(node.value)
            self._imports[name] = found - {name}
        return self._imports[name]

    def closure(self, start: str) -> dict[str, list[str]]:
        """Every project module that running `start` imports, directly or not, each with the
        chain of imports that reaches it."""
        via = {m: [m] for m in sorted(self._with_packages(start), reverse=True)}
        todo = list(via)
        for name in todo:  # breadth first: each chain is a shortest one
            for found in sorted(self.imports(name) - via.keys()):
                via[found] = [*via[name], found]
                todo.append(found)
        return via

    # --- names ---------------------------------------------------------------------------------

    def _symbols(self, module: Module) -> dict[str, str]:
        """Local name -> qualified name, from every import in the module and its own top-level
        definitions."""
        table = {
            n.name: f"{module.name}.{n.name}"
            for n in module.tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    table[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(node, module)
                for a in node.names:
                    table[a.asname or a.name] = f"{base}.{a.name}"
        return table

    def qualname(self, module: Module, expr: ast.expr) -> str | None:
        """`config.load` -> "stages.params.load", for names and attribute chains."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):  # a quoted annotation
            try:
                return self.qualname(module, ast.parse(expr.value, mode="eval").body)
            except SyntaxError:
                return None
        if isinstance(expr, ast.Name):
            return module.symbols.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.qualname(module, expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    def function(
        self, qualname: str, depth: int = 0
    ) -> tuple[Module, ast.FunctionDef | ast.AsyncFunctionDef, int] | None:
        """The project function a qualified name calls, and how many of its parameters the call
        does not pass (1 for a classmethod's `cls`); None when it is no project function."""
        parts = qualname.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = self.modules.get(".".join(parts[:cut]))
            if module is None:
                continue
            rest, scope, skip = parts[cut:], module.tree.body, 0
            for i, part in enumerate(rest):
                node = next(
                    (n for n in scope if getattr(n, "name", None) == part and isinstance(n, _DEFS)),
                    None,
                )
                if node is None:
                    imported = module.symbols.get(part) if i == 0 else None
                    if imported and depth < 5 and imported != qualname:  # a re-export
                        return self.function(".".join([imported, *rest[1:]]), depth + 1)
                    return None
                if isinstance(node, ast.ClassDef):
                    scope = node.body
                    continue
                if i != len(rest) - 1:
                    return None
                if i > 0 and any(_decorator(d) == "classmethod" for d in node.decorator_list):
                    skip = 1
                return module, node, skip
            return None
        return None

    def parameter(self, module: Module, call: ast.Call, arg: ast.expr) -> tuple[Any, ...] | None:
        """The parameter of the project function `call` calls that receives `arg`:
        (callee module, callee function, parameter), or None when it cannot be told."""
        qual = self.qualname(module, call.func)
        found = self.function(qual) if qual else None
        if found is None:
            return None
        callee_module, fn, skip = found
        positional = [*fn.args.posonlyargs, *fn.args.args]
        for i, a in enumerate(call.args):
            if isinstance(a, ast.Starred):
                return None
            if a is arg:
                return (
                    (callee_module, fn, positional[i + skip])
                    if i + skip < len(positional)
                    else None
                )
        for kw in call.keywords:
            if kw.value is arg:
                names = [*positional, *fn.args.kwonlyargs]
                return next(((callee_module, fn, p) for p in names if p.arg == kw.arg), None)
        return None

    # --- params reads ----------------------------------------------------------------------

    def _is_params(self, module: Module, node: ast.AST) -> bool:
        """A call that returns the validated params (config.load, config.validate)."""
        if not isinstance(node, ast.Call):
            return False
        return self.qualname(module, node.func) in {
            f"{PARAMS_MODULE}.load",
            f"{PARAMS_MODULE}.validate",
        }

    def _params_annotation(self, module: Module, annotation: ast.expr | None) -> bool:
        return (
            annotation is not None
            and self.qualname(module, annotation) == f"{PARAMS_MODULE}.Params"
        )

    def _scope(self, module: Module, node: ast.AST) -> ast.AST:
        """The innermost function (or the module) a node belongs to."""
        while node in module.parents:
            node = module.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                return node
        return module.tree

    def _bound(self, module: Module, scope: ast.AST, cache: dict[ast.AST, set[str]]) -> set[str]:
        """Names that hold the validated params in a scope (its own and its enclosing ones')."""
        if scope not in cache:
            names: set[str] = set()
            if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs]
                names |= {a.arg for a in args if self._params_annotation(module, a.annotation)}
            for node in ast.walk(scope):
                if self._scope(module, node) is not scope:
                    continue
                if isinstance(node, ast.Assign | ast.AnnAssign) and self._is_params(
                    module, node.value
                ):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names |= {t.id for t in targets if isinstance(t, ast.Name)}
            if scope is not module.tree:
                names |= self._bound(module, self._scope(module, scope), cache)
            cache[scope] = names
        return cache[scope]

    def reads(self, name: str) -> tuple[list[Read], list[str]]:
        """The params reads in module `name`, and the uses of the params object the rule cannot
        follow (each as "file:line: what")."""
        if name in self._reads:
            return self._reads[name]
        module, reads, unfollowed = self.modules[name], [], []
        cache: dict[ast.AST, set[str]] = {}
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
                continue
            if node.id not in self._bound(module, self._scope(module, node), cache):
                continue
            where = f"{module.rel}:{node.lineno}"
            parent = module.parents[node]
            if isinstance(parent, ast.Attribute) and parent.value is node:
                reads += self._section_reads(module, parent, where)
                continue
            call = _call_of(module, node)
            if call is not None:
                found = self.parameter(module, call, node)
                if found and self._params_annotation(found[0], found[2].annotation):
                    continue  # followed in the callee's module, which the stage reaches too
            unfollowed.append(f"{where}: `{ast.unparse(parent)}`")
        self._reads[name] = (reads, unfollowed)
        return self._reads[name]

    def _section_reads(self, module: Module, attr: ast.Attribute, where: str) -> list[Read]:
        """What `p.<section>` reads, from how the expression around it uses it."""
        section = attr.attr
        if section in ALIASES:
            return [Read(ALIASES[section], "", where)]
        if section in UNTRACKED:
            return []
        up = module.parents[attr]
        if isinstance(up, ast.Attribute):
            return [Read(f"{section}.{up.attr}", "", where)]
        if isinstance(up, ast.Subscript) and up.value is attr:
            key = up.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return [Read(f"{section}.{key.value}", "", where)]
            return [Read(section, ITEM, where)]
        if isinstance(up, ast.Compare) and any(
            c is attr and isinstance(op, ast.In | ast.NotIn)
            for c, op in zip(up.comparators, up.ops, strict=True)
        ):
            return [Read(section, NAMES, where)]
        call = _call_of(module, attr)
        if call is not None:
            if isinstance(call.func, ast.Name) and call.func.id == "list" and call.args == [attr]:
                return [Read(section, NAMES, where)]
            fields = self._fields_read(module, call, attr)
            if fields is not None:
                return [Read(f"{section}.{f}", "", where) for f in sorted(fields)]
        return [Read(section, "", where)]

    def _fields_read(self, module: Module, call: ast.Call, arg: ast.expr) -> set[str] | None:
        """The fields a project function reads from the parameter `arg` is passed to, when it
        reads nothing else of it (no bare use); None otherwise."""
        found = self.parameter(module, call, arg)
        if found is None:
            return None
        callee, fn, param = found
        fields = set()
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Name)
                and node.id == param.arg
                and isinstance(node.ctx, ast.Load)
            ):
                up = callee.parents[node]
                if not (isinstance(up, ast.Attribute) and up.value is node):
                    return None
                fields.add(up.attr)
        return fields


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _call_of(module: Module, arg: ast.expr) -> ast.Call | None:
    """The call `arg` is an argument of (positional or keyword), if it is one."""
    up = module.parents[arg]
    if isinstance(up, ast.keyword):
        up = module.parents[up]
    return up if isinstance(up, ast.Call) and up.func is not arg else None


def _decorator(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of a module except the bodies of `if TYPE_CHECKING:` (they never run)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _decorator(node.test) == "TYPE_CHECKING":
            todo += [node.test, *node.orelse]
        else:
            todo += ast.iter_child_nodes(node)
    return out


# --- dvc.yaml --------------------------------------------------------------------------------


def _interpolate(text: str, params: dict[str, Any], key: str | None) -> str:
    def value(m: re.Match[str]) -> str:
        if m.group(1) == "key" and key is not None:
            return key
        v: Any = params
        for part in m.group(1).split("."):
            v = v[part]
        return str(v)

    return re.sub(r"\$\{\s*([\w.]+)\s*\}", value, text)


def _entries(items: list[Any] | None) -> list[str]:
    """dvc.yaml list entries as strings (an entry may be a mapping: its keys)."""
    out: list[str] = []
    for item in items or []:
        out += [item] if isinstance(item, str) else list(item)
    return out


def _params_entries(items: list[Any] | None) -> list[str]:
    """A stage's params.yaml keys (an entry `{other.yaml: [...]}` names another file's)."""
    out: list[str] = []
    for item in items or []:
        if isinstance(item, str):
            out.append(item)
        else:
            out += [k for f, keys in item.items() if f == "params.yaml" for k in keys or []]
    return out


def _stage(
    name: str, body: dict[str, Any], params: dict[str, Any], item_of: str | None, key: str | None
) -> Stage:
    cmd = body["cmd"] if isinstance(body["cmd"], str) else " && ".join(body["cmd"])
    found = re.search(rf"python3? -m ({PACKAGE}(?:\.\w+)+)", cmd)
    return Stage(
        name,
        found.group(1) if found else None,
        [_interpolate(d, params, key).rstrip("/") for d in _entries(body.get("deps"))],
        [_interpolate(p, params, key) for p in _params_entries(body.get("params"))],
        item_of,
        key,
    )


def dvc_stages(root: Path) -> list[Stage]:
    """Every stage of root/dvc.yaml, each `foreach` item its own, as `dvc repro` expands them."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = []
    for name, body in dvc["stages"].items():
        if "foreach" not in body:
            stages.append(_stage(name, body, params, None, None))
            continue
        found = re.fullmatch(r"\$\{\s*(\w+)\s*\}", str(body["foreach"]))
        assert found, f"{name}: foreach {body['foreach']!r} is not `${{section}}`; teach this test"
        section = found.group(1)
        for key in params[section]:
            stages.append(_stage(f"{name}@{key}", body["do"], params, section, str(key)))
    return stages


# --- the checks ------------------------------------------------------------------------------


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(f"{d}/") for d in deps)


def _read_key(stage: Stage, read: Read) -> str | None:
    """The params key a read needs in this stage (None: the stage's own definition covers it)."""
    if read.how and read.key == stage.item_of:
        return None if read.how == NAMES else f"{read.key}.{stage.key}"
    return read.key


def missing_deps(project: Project, stage: Stage, allowed: dict[str, str]) -> list[str]:
    """Each project file the stage's command runs that none of its deps covers."""
    if stage.module not in project.modules:
        return [
            f"{stage.name}: its command runs no project module (`python -m {PACKAGE}.<module>`), "
            "so this test cannot see what it reads"
        ]
    out = []
    for name, chain in sorted(project.closure(stage.module).items()):
        module = project.modules[name]
        if module.rel in allowed or module.empty_init or _covered(module.rel, stage.deps):
            continue
        out.append(
            f"{stage.name}: runs {module.rel} ({' -> '.join(chain)}) but no dep covers it: add "
            f"`- {module.rel}` (or its folder) to the deps of stage `{stage.base}` in dvc.yaml"
        )
    return out


def missing_params(project: Project, stage: Stage) -> list[str]:
    """Each params key the stage's code reads that its `params:` do not cover."""
    if stage.module not in project.modules:
        return []
    where: dict[str, set[str]] = {}
    listed = [p.replace(".", "/") for p in stage.params]
    for name in project.closure(stage.module):
        for read in project.reads(name)[0]:
            key = _read_key(stage, read)
            if key is not None and not _covered(key.replace(".", "/"), listed):
                where.setdefault(key, set()).add(read.where)
    out = []
    for key, places in sorted(where.items()):
        entry = f"{stage.item_of}.${{key}}" if key == f"{stage.item_of}.{stage.key}" else key
        out.append(
            f"{stage.name}: its code reads params `{key}` ({', '.join(sorted(places)[:3])}) but "
            f"the stage's params do not list it: add `- {entry}` to the params of stage "
            f"`{stage.base}` in dvc.yaml"
        )
    return out


def needless_deps(project: Project, stage: Stage) -> list[str]:
    """Each project-code dep that covers no file the stage runs: it only makes the stage re-run."""
    if stage.module not in project.modules:
        return []
    run = {project.modules[m].rel for m in project.closure(stage.module)}
    out = []
    for dep in stage.deps:
        if dep != PACKAGE and not dep.startswith(f"{PACKAGE}/"):
            continue
        if not any(_covered(f, [dep]) for f in run):
            out.append(
                f"{stage.name}: dep `{dep}` is project code the stage never runs: remove it from "
                f"the deps of stage `{stage.base}` in dvc.yaml"
            )
            continue
        idle = sorted(  # a folder re-runs the stage when any file in it changes
            m.rel
            for m in project.modules.values()
            if _covered(m.rel, [dep]) and m.rel != dep and m.rel not in run and not m.empty_init
        )
        if idle:
            out.append(
                f"{stage.name}: dep `{dep}` also covers {', '.join(idle)}, which the stage never "
                f"runs: list the files it runs instead of the folder in stage `{stage.base}`"
            )
    return out


def unfollowed(project: Project, stages: list[Stage]) -> list[str]:
    """Uses of the params object, in code some stage runs, that the params rule cannot follow."""
    names = {n for s in stages if s.module in project.modules for n in project.closure(s.module)}
    return sorted({u for n in names for u in project.reads(n)[1]})


def _problems(root: Path, allowed: dict[str, str]) -> list[str]:
    project, stages = Project(root), dvc_stages(root)
    return [
        *(m for s in stages for m in missing_deps(project, s, allowed)),
        *(m for s in stages for m in missing_params(project, s)),
        *(m for s in stages for m in needless_deps(project, s)),
        *(f"{u}: the params rule cannot follow this use" for u in unfollowed(project, stages)),
    ]


# --- the tests on this checkout --------------------------------------------------------------


def test_every_stage_depends_on_the_project_code_it_runs() -> None:
    project = Project(ROOT)
    missing = [m for s in dvc_stages(ROOT) for m in missing_deps(project, s, ALLOWED)]
    assert not missing, "dvc.yaml misses deps, so these stages would not re-run:\n" + "\n".join(
        missing
    )


def test_every_stage_lists_the_params_its_code_reads() -> None:
    project = Project(ROOT)
    missing = [m for s in dvc_stages(ROOT) for m in missing_params(project, s)]
    assert not missing, "dvc.yaml misses params, so these stages would not re-run:\n" + "\n".join(
        missing
    )


def test_no_stage_depends_on_project_code_it_does_not_run() -> None:
    project = Project(ROOT)
    needless = [m for s in dvc_stages(ROOT) for m in needless_deps(project, s)]
    assert not needless, "these deps re-run a stage for nothing:\n" + "\n".join(needless)


def test_the_params_rule_follows_every_use_of_the_params_object() -> None:
    found = unfollowed(Project(ROOT), dvc_stages(ROOT))
    assert not found, (
        "the params object is used where this test cannot see which sections are read; read "
        "`p.<section>` there, or pass `p` to a function whose parameter is annotated "
        "`config.Params`:\n" + "\n".join(found)
    )


def test_editing_a_techniques_review_text_reruns_report() -> None:
    """`report` renders each technique's `report` lines (int8_static's calibration sensitivity,
    say) and its `declares` from the catalog stages.techniques.catalog: its imports reach the
    catalog and every technique module the catalog names, and its deps cover each of them. No other
    stage than `control` and `optimize` reaches a technique's module: validating params needs only
    the options."""
    project = Project(ROOT)
    stages = dvc_stages(ROOT)
    (report,) = (s for s in stages if s.name == "report")
    assert report.module is not None
    catalog = f"{PACKAGE}.techniques.catalog"
    reached = project.closure(report.module)
    assert catalog in reached, "report no longer imports the technique catalog"
    package = f"{PACKAGE}.techniques."
    techniques = {
        m for m in project.imports(catalog) if m.startswith(package) and ".options" not in m
    }
    assert f"{package}int8_static" in techniques and techniques <= reached.keys()
    files = sorted(project.modules[m].rel for m in {catalog, *techniques})
    uncovered = [f for f in files if not _covered(f, report.deps)]
    assert not uncovered, f"report does not re-run when these change: {uncovered}"
    reaching = sorted(
        {
            s.base
            for s in stages
            if s.module and f"{package}int8_static" in project.closure(s.module)
        }
    )
    # `control` applies the shipped techniques to build the stack, as `optimize` applies one
    assert reaching == ["control", "optimize", "report"], reaching


def test_the_allowed_exceptions_are_real() -> None:
    """Each exception names a file some stage runs (none is left over from a removed one)."""
    project, stages = Project(ROOT), dvc_stages(ROOT)
    run = {project.modules[n].rel for s in stages if s.module for n in project.closure(s.module)}
    assert set(ALLOWED) <= run, f"ALLOWED names files no stage runs: {set(ALLOWED) - run}"


def test_params_attributes_are_sections_or_aliases() -> None:
    """The rule maps every attribute of stages.params.Params to a params.yaml key."""
    tree = ast.parse((ROOT / PACKAGE / "params.py").read_text())
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Params")
    attributes = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)} | {
        n.name for n in cls.body if isinstance(n, ast.FunctionDef)
    }
    sections = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert attributes - sections == set(ALIASES), "map the new attribute in ALIASES"
    assert set(UNTRACKED) <= sections


# --- the checker fails when it should --------------------------------------------------------

_PARAMS = """
from dataclasses import dataclass


@dataclass
class Params:
    target: dict
    bench: dict
    technique: dict


def load() -> Params:
    return Params({}, {}, {})
"""
_HELPER = """
from stages import params as config


def threads(p: config.Params) -> int:
    return p.target["threads"]


def confidence(bench: object) -> float:
    return bench.confidence
"""
_RUN = """
import sys

from stages import params as config


def main() -> None:
    from stages.helper import confidence, threads

    p = config.load()
    name = sys.argv[1]
    print(threads(p), confidence(p.bench), p.technique[name])
"""


def _synthetic(root: Path, deps: list[str], params: list[str]) -> Path:
    """A project of three modules: stages.run imports stages.helper in a function; between them
    they read target.threads, bench.confidence and technique.<its own item>."""
    (root / PACKAGE).mkdir(parents=True)
    for name, text in [("__init__", ""), ("params", _PARAMS), ("helper", _HELPER), ("run", _RUN)]:
        (root / PACKAGE / f"{name}.py").write_text(text)
    stage = {"cmd": "python -m stages.run ${key}", "deps": deps, "params": params}
    (root / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"run": {"foreach": "${technique}", "do": stage}}})
    )
    (root / "params.yaml").write_text(
        yaml.safe_dump({"technique": {"a": {}, "b": {}}, "target": {"threads": 1}, "bench": {}})
    )
    return root


def test_the_checker_fails_on_a_missing_dep_or_param(tmp_path: Path) -> None:
    code = ["stages/run.py", "stages/params.py"]
    partial = _synthetic(tmp_path / "partial", code, ["target"])
    problems = _problems(partial, {})
    for stage in ("run@a", "run@b"):
        assert any(
            p.startswith(f"{stage}: runs stages/helper.py (stages.run -> stages.helper)")
            and "add `- stages/helper.py`" in p
            for p in problems
        ), problems
        assert any(
            p.startswith(f"{stage}: its code reads params `bench.confidence`")
            and "add `- bench.confidence`" in p
            for p in problems
        ), problems
        key = stage[-1]
        assert any(
            p.startswith(f"{stage}: its code reads params `technique.{key}`")
            and "add `- technique.${key}`" in p
            for p in problems
        ), problems
    assert len(problems) == 6, problems

    everything = ["target", "bench", "technique.${key}"]
    complete = _synthetic(tmp_path / "complete", [*code, "stages/helper.py"], everything)
    assert _problems(complete, {}) == []
    extra = _synthetic(
        tmp_path / "extra", [*code, "stages/helper.py", "stages/gone.py"], everything
    )
    assert _problems(extra, {}) == [
        f"run@{k}: dep `stages/gone.py` is project code the stage never runs: remove it from the "
        "deps of stage `run` in dvc.yaml"
        for k in "ab"
    ]


def test_a_folder_dep_covering_code_the_stage_never_runs_is_refused() -> None:
    """`host` listing the whole techniques folder would re-run it on every edit of a technique's
    review text: the check names the folder and files the stage never runs."""
    project = Project(ROOT)
    (host,) = (s for s in dvc_stages(ROOT) if s.name == "host")
    assert not needless_deps(project, host)
    wide = replace(host, deps=[*host.deps, "stages/techniques"])
    (found,) = needless_deps(project, wide)
    assert "dep `stages/techniques` also covers" in found
    assert "stages/techniques/int8_static.py" in found

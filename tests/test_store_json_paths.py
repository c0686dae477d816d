"""Every JSON path the store's SQL reads ('$.field' in json_extract and its kin) names a field
of the pydantic model whose JSON that column holds (store/json_columns.py). Renaming a field
without updating the SQL fails here instead of silently emptying a query."""

from __future__ import annotations

import ast
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import sotopia_pi.store
from sotopia_pi.store.json_columns import JSON_COLUMNS

STORE_DIR = Path(sotopia_pi.store.__file__).parent
JSON_CALL = re.compile(r"\bjson_(?:extract|array_length|type|each|tree)\s*\(([^()]*)\)", re.IGNORECASE)
JSON_ARROW = re.compile(r"([A-Za-z_][\w.]*)\s*->>?\s*'(\$[^']*)'")
QUOTED = re.compile(r"'(\$[^']*)'")
TABLE = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+([A-Za-z_]\w*)(?:\s+(?:AS\s+)?([A-Za-z_]\w*))?", re.IGNORECASE)
NOT_ALIASES = {
    "where", "join", "left", "inner", "cross", "on", "group", "order", "limit", "set", "values",
    "using", "natural", "union", "having", "select", "as", "default",
}
PATH_STEP = re.compile(r'\.([A-Za-z_]\w*)|\."([^"]+)"|\[(#?-?\d*)\]')


def _text(node: ast.AST) -> str | None:
    """The text of a string expression (a literal, an f-string with each value as ?, or a +
    of those), or None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else " ? " for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return left + right if left is not None and right is not None else None
    return None


def sql_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every outermost string expression in a module."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        text = _text(node)
        if text is not None:
            found.append((getattr(node, "lineno", 0), text))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def json_reads(sql: str) -> list[tuple[str, str]]:
    """(column reference, '$...' path) of each JSON read in one SQL text."""
    reads = []
    for call in JSON_CALL.finditer(sql):
        column, _, rest = call.group(1).partition(",")
        reads += [(column.strip(), path) for path in QUOTED.findall(rest)]
    reads += JSON_ARROW.findall(sql)
    return reads


def resolve_column(reference: str, sql: str) -> str:
    """'alias.column' or 'column' -> 'table.column', using the FROM/JOIN clauses of the same text."""
    tables: dict[str, str] = {}
    for table, alias in TABLE.findall(sql):
        tables[table] = table
        if alias and alias.lower() not in NOT_ALIASES:
            tables[alias] = table
    prefix, dot, column = reference.rpartition(".")
    if dot:
        if prefix not in tables:
            raise LookupError(f"{reference}: no table or alias {prefix!r} in the same SQL text")
        return f"{tables[prefix]}.{column}"
    named = set(tables.values())
    if len(named) != 1:
        raise LookupError(f"{reference}: write it as table.{reference} (the SQL text names {sorted(named) or 'no table'})")
    return f"{named.pop()}.{column}"


def _options(annotation) -> list:
    """The types an annotation allows, with Optional, unions and Annotated taken apart."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [option for arg in typing.get_args(annotation) for option in _options(arg)]
    return [annotation] if annotation is not type(None) else []


def _step(annotation, key: str | None, index: str | None) -> list:
    """The types reached by one path step from `annotation`; empty if the step does not exist."""
    reached = []
    for option in _options(annotation):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if key is not None:
            if isinstance(option, type) and issubclass(option, BaseModel) and key in option.model_fields:
                reached.append(option.model_fields[key].annotation)
            elif origin is dict:
                reached.append(args[1] if args else typing.Any)
            elif option is typing.Any or option is dict:
                reached.append(typing.Any)
        elif origin in (list, tuple, set, frozenset) or option in (list, tuple, typing.Any):
            reached.append(args[0] if args else typing.Any)
    return reached


def path_problem(model: type[BaseModel], path: str) -> str | None:
    """None if `path` ('$.a.b[0].c') exists in `model`, else what is missing."""
    if not path.startswith("$"):
        return f"{path!r} does not start with $"
    rest, current, walked = path[1:], [model], "$"
    while rest:
        step = PATH_STEP.match(rest)
        if step is None:
            return f"{path!r}: cannot read the path after {walked!r}"
        key = step.group(1) or step.group(2)
        reached = [t for annotation in current for t in _step(annotation, key, None if key else step.group(3))]
        walked += step.group(0)
        if not reached:
            return f"{path!r}: {model.__name__} has no {walked!r}"
        current, rest = reached, rest[step.end() :]
    return None


def store_json_reads() -> list[tuple[str, str, str, str]]:
    """(where, SQL column reference resolved to table.column or an error, path, sql) for the whole store."""
    reads = []
    for source in sorted(STORE_DIR.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for line, sql in sql_texts(tree):
            for reference, path in json_reads(sql):
                where = f"{source.relative_to(STORE_DIR.parent.parent)}:{line}"
                try:
                    column = resolve_column(reference, sql)
                except LookupError as error:
                    column = f"unresolved: {error}"
                reads.append((where, column, path, sql))
    return reads


READS = store_json_reads()


def test_the_store_reads_json_paths_this_test_can_see():
    seen = {(column, path) for _, column, path, _ in READS}
    assert ("turns.data", "$.by_human") in seen
    assert ("turns.data", "$.prompt") in seen


@pytest.mark.parametrize("where, column, path, sql", READS, ids=[f"{w} {c} {p}" for w, c, p, _ in READS])
def test_every_json_path_in_the_store_names_a_field_of_its_model(where, column, path, sql):
    assert column in JSON_COLUMNS, f"{where}: {column} is not in store/json_columns.JSON_COLUMNS"
    problem = path_problem(JSON_COLUMNS[column], path)
    assert problem is None, f"{where}: {problem}"


class _Inner(BaseModel):
    score: int


class _Record(BaseModel):
    name: str
    by_side: list[_Inner]
    scores: dict[str, _Inner] = {}
    maybe: _Inner | None = None


@pytest.mark.parametrize(
    "path, ok",
    [
        ("$.name", True),
        ("$.by_side[0].score", True),
        ("$.scores.goal.score", True),
        ('$.scores."social rules".score', True),
        ("$.maybe.score", True),
        ("$.renamed", False),
        ("$.by_side[0].renamed", False),
        ("$.name.inner", False),
        ("$.scores.goal.renamed", False),
        ("$.by_side.score", False),
    ],
)
def test_the_path_check_tells_a_field_from_a_missing_one(path, ok):
    assert (path_problem(_Record, path) is None) is ok


def test_columns_resolve_through_aliases_and_single_tables():
    sql = (
        "SELECT json_extract(t.data, '$.a'), json_extract(ep.data, '$.b') "
        "FROM episodes ep LEFT JOIN evaluations t ON t.episode_id = ep.id"
    )
    assert [resolve_column(ref, sql) for ref, _ in json_reads(sql)] == ["evaluations.data", "episodes.data"]
    assert resolve_column("data", "SELECT data ->> '$.x' FROM turns WHERE 1") == "turns.data"
    with pytest.raises(LookupError):
        resolve_column("data", sql)

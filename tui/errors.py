"""Errors in words a person reads: a pydantic ValidationError becomes one line per problem,
"field: what is wrong", without pydantic's input dumps, error codes or documentation links."""

from __future__ import annotations

from pydantic import ValidationError


def field_path(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "value"


def describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        problems = [
            f"{field_path(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in error.errors(include_url=False)
        ]
        if len(problems) == 1:
            return f"Not valid: {problems[0]}"
        return "\n".join([f"Not valid ({len(problems)} problems):", *problems])
    return str(error)

"""The exported SDL matches the code, and every type, field, argument and enum value
that users see in GraphiQL has a description."""

import subprocess
import sys
from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
)

from graph.schema import schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_is_up_to_date() -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "strawberry", "export-schema", "graph.schema:schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "schema.graphql").read_text()
    assert exported.strip() == committed.strip(), (
        "schema.graphql is stale: run `uv run strawberry export-schema graph.schema:schema "
        "> schema.graphql`"
    )


def test_every_type_and_field_is_described() -> None:
    missing: list[str] = []
    for name, type_ in schema._schema.type_map.items():
        if name.startswith("__") or name in {"String", "Int", "Float", "Boolean", "ID"}:
            continue
        if not getattr(type_, "description", None):
            missing.append(name)
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description and arg_name not in {"input"}:
                        missing.append(f"{name}.{field_name}({arg_name})")
    assert missing == []


def test_enums_expose_every_persistence_value() -> None:
    from persistence import enums  # noqa: PLC0415

    for enum_cls in (
        enums.TechnologyType,
        enums.ValidationScope,
        enums.SeverityLevel,
        enums.SessionStatus,
        enums.OverallStatus,
        enums.ExecutionStatus,
    ):
        gql = schema._schema.type_map[enum_cls.__name__]
        assert isinstance(gql, GraphQLEnumType)
        assert set(gql.values) == {m.name for m in enum_cls}

"""graph.variables answers exactly what graphql-core's variable coercion answers:
the same coerced values (same Python types: enum members, floats, dicts) and, for
anything invalid, graphql-core's own errors; valid values of every input type of the
schema take the built path, and graphql-core's executor uses it."""

from collections.abc import Callable
from enum import Enum
from typing import Any

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLDefaultInput,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    VariableDefinitionNode,
    parse,
)
from graphql.execution import executor
from hypothesis import given, settings
from hypothesis import strategies as st

from graph import variables
from graph.schema import schema
from tests.graph.input_values import JSON_VALUES, assert_same, client_values

SCHEMA = schema._schema
INPUT_TYPES = sorted(
    name
    for name, type_ in SCHEMA.type_map.items()
    if isinstance(type_, GraphQLInputObjectType) and not name.startswith("__")
)
# Variable types beyond the input objects: scalars, enums, lists, non-null wrappers.
OTHER_TYPES = [
    "Int",
    "Int!",
    "[Int!]",
    "Float",
    "Boolean",
    "ID!",
    "[ID!]!",
    "String",
    "DateTime",
    "JSON",
    "SeverityLevel",
    "[SeverityLevel!]!",
    "[[String]]",
]


def _nodes(schema_: GraphQLSchema, var_type: str) -> tuple[VariableDefinitionNode, ...]:
    document = parse(f"query Q($v: {var_type}) {{ __typename }}")
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return tuple(operation.variable_definitions or ())


def _compare(var_type: str, inputs: dict[str, Any], schema_: GraphQLSchema = SCHEMA) -> bool:
    """Both answers for ``inputs`` agree; True when the built path answered."""
    return _compare_made(var_type, lambda: inputs, schema_)


def _compare_made(
    var_type: str, make: Callable[[], dict[str, Any]], schema_: GraphQLSchema = SCHEMA
) -> bool:
    """Both answers agree, each for the inputs ``make`` returns (built afresh for each
    when they hold a one-shot iterator); True when the built path answered."""
    nodes = _nodes(schema_, var_type)
    given = make()
    built = variables.get_variable_values(schema_, nodes, given)
    standard = variables._STANDARD(schema_, nodes, make())
    if isinstance(standard, list):
        assert isinstance(built, list)
        assert [e.formatted for e in built] == [e.formatted for e in standard]
    else:
        assert not isinstance(built, list)
        assert_same(built.coerced, standard.coerced)
        assert built.sources.keys() == standard.sources.keys()
        for name, source in standard.sources.items():
            assert built.sources[name].value is given.get(name, source.value)
            assert str(built.sources[name].signature.type) == str(source.signature.type)
    return variables._coerce_all(schema_, nodes, make()) is not None


def test_the_executor_coerces_through_graph_variables() -> None:
    assert executor.get_variable_values is variables.get_variable_values  # type: ignore[attr-defined]


@pytest.mark.parametrize("type_name", INPUT_TYPES)
def test_valid_values_of_every_input_type_take_the_built_path(type_name: str) -> None:
    @settings(max_examples=60, deadline=None, database=None)
    @given(client_values(type_name))
    def check(value: dict[str, Any]) -> None:
        assert _compare(f"{type_name}!", {"v": value})
        assert _compare(f"[{type_name}!]", {"v": [value, value]})

    check()


def _broken(value: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``value`` with one field replaced by any JSON, removed, or an unknown one added."""
    keys = sorted(value)
    replace = st.tuples(st.sampled_from(keys), JSON_VALUES).map(lambda kv: {**value, kv[0]: kv[1]})
    drop = st.sampled_from(keys).map(lambda k: {n: v for n, v in value.items() if n != k})
    extra = st.text(min_size=1).map(lambda k: {**value, k: 1})
    return (replace | drop | extra) if keys else extra


BROKEN = ["RecordValidationResultInput", "CreateValidationSessionInput", "SessionFilterInput"]


@pytest.mark.parametrize("type_name", BROKEN)
def test_invalid_input_objects_get_graphql_cores_answer(type_name: str) -> None:
    @settings(max_examples=150, deadline=None, database=None)
    @given(client_values(type_name).flatmap(_broken))
    def check(value: dict[str, Any]) -> None:
        _compare(f"{type_name}!", {"v": value})

    check()


@pytest.mark.parametrize("var_type", OTHER_TYPES)
def test_any_json_for_other_types_gets_graphql_cores_answer(var_type: str) -> None:
    @settings(max_examples=80, deadline=None, database=None)
    @given(JSON_VALUES | st.floats() | st.sampled_from(["INFO", "CRITICAL", "info"]))
    def check(value: Any) -> None:
        _compare(var_type, {"v": value})

    check()


def test_enum_values_are_the_python_members() -> None:
    nodes = _nodes(SCHEMA, "[SeverityLevel!]!")
    built = variables.get_variable_values(SCHEMA, nodes, {"v": ["CRITICAL", "INFO"]})
    assert not isinstance(built, list)
    assert all(isinstance(member, Enum) for member in built.coerced["v"])
    assert _compare("[SeverityLevel!]!", {"v": ["CRITICAL", "INFO"]})


def test_defaults_and_missing_values() -> None:
    assert _compare("Int = 5", {})  # the operation's default, on the built path
    assert _compare('[String!] = ["a"]', {"v": None})
    assert _compare("Int", {})  # omitted nullable: no value at all
    assert not _compare("Int!", {})  # required and missing: graphql-core's error
    assert not _compare("Int", {"v": 2**40})  # out of range: graphql-core's error
    assert not _compare("NoSuchType", {"v": 1})  # unknown type: graphql-core's error


def _recursive_schema() -> GraphQLSchema:
    tree = GraphQLInputObjectType(
        "Tree",
        lambda: {"n": GraphQLInputField(GraphQLInt), "child": GraphQLInputField(tree)},
    )
    pick = GraphQLInputObjectType(
        "Pick",
        {"a": GraphQLInputField(GraphQLInt), "b": GraphQLInputField(GraphQLString)},
        is_one_of=True,
    )
    query = GraphQLObjectType(
        "Query",
        {
            "t": GraphQLField(
                GraphQLInt, {"tree": GraphQLArgument(tree), "pick": GraphQLArgument(pick)}
            )
        },
    )
    return GraphQLSchema(query)


def test_recursive_and_one_of_types_are_left_to_graphql_core() -> None:
    other = _recursive_schema()
    deep: dict[str, Any] = {"n": 1}
    for _ in range(300):  # past graphql-core's nesting limit: its own error
        deep = {"child": deep}
    for var_type, value in [
        ("Tree", {"n": 1, "child": {"n": 2}}),
        ("Tree", deep),
        ("Pick", {"a": 1}),
        ("Pick", {"a": 1, "b": "x"}),
    ]:
        assert not _compare(var_type, {"v": value}, other)


def test_one_shot_iterators_reach_graphql_core_unconsumed() -> None:
    # Only Python callers pass these (JSON has lists): a failed built attempt must not
    # have consumed part of it.
    assert not _compare_made("[Int]", lambda: {"v": (x for x in [1, "x", 3])})
    assert not _compare_made("[Int]", lambda: {"v": (x for x in [1, 2, 3])})


def test_a_type_that_cannot_be_built_is_left_to_graphql_core() -> None:
    # A default graphql-core only coerces when the field is absent (and then fails):
    # building it in advance must not turn a valid request into an exception.
    odd = GraphQLInputObjectType(
        "Odd",
        {
            "n": GraphQLInputField(GraphQLInt, default=GraphQLDefaultInput(value="not an int")),
            "s": GraphQLInputField(GraphQLString),
        },
    )
    other = GraphQLSchema(
        GraphQLObjectType("Query", {"t": GraphQLField(GraphQLInt, {"o": GraphQLArgument(odd)})})
    )
    assert not _compare("Odd", {"v": {"n": 1, "s": "x"}}, other)

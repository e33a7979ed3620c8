"""Compile a query document into a plan, or refuse (None) when any part of it is
outside what plans support: then standard execution serves it.

Supported: one query operation whose selections, after fragment expansion, reach only
the fields of ``graph.plan.fields.FETCHES``, column fields of the row types, connection
fields and ``__typename``; aliases, fragments and merged fields as graphql-core
collects them. Not supported: directives (@skip, @include, ...), introspection,
mutations, ``node``, metrics, statistics and anything else with its own resolver.
Field permissions are kept only when they are role checks, which the runner enforces
by falling back to standard execution whenever the actor lacks a role.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInt,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
)
from strawberry.permission import PermissionExtension
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from graph.ids import GlobalIdOf
from graph.permissions import RolePermission
from graph.plan.fields import FETCHES, Fetch
from graph.plan.serialize import LeafSpec, Writer, leaf_writer, serializer
from persistence.driver_reads import Decoding
from persistence.enums import Role
from persistence.models import (
    BehavioralTestResult,
    ValidationDiscrepancy,
    ValidationResult,
    ValidationSession,
)

# Row types and their table's columns: every row a loader returns for one of them holds
# these columns first, in this order (leaf writers read them by position).
ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(model.__table__.c.keys())  # type: ignore[union-attr]
    for name, model in (
        ("ValidationSession", ValidationSession),
        ("ValidationResult", ValidationResult),
        ("Discrepancy", ValidationDiscrepancy),
        ("BehavioralTestResult", BehavioralTestResult),
    )
}
ROW_TYPES = frozenset(ROW_COLUMNS)
# Per selection: one per result layout it is read with (statements with the same
# columns share a decoding), so in practice one.
_RAW_WRITERS = 8


class Unsupported(Exception):
    """The document (or this run of it) is outside what plans serve."""


class NullValue(Unsupported):
    """A null where the schema says non-null: standard execution reports the error, or
    (if it finds a value) the plan read too little (verify mode records that)."""


@dataclass(slots=True)
class ObjectPlan:
    """The selection on one object type: a template of the response keys in order
    (constants such as ``__typename`` filled in), the writer of its leaf values (None
    when it has none) and its relations."""

    type_name: str
    template: dict[str, Any] = field(default_factory=dict)
    relations: list["RelationPlan"] = field(default_factory=list)
    write_leaves: Writer | None = None
    columns: set[str] = field(default_factory=set)  # the row columns the selection reads
    leaves: tuple[LeafSpec, ...] = ()
    # Writers of raw driver records, per decoding (by id; the decoding kept alive).
    raw_writers: dict[int, tuple[Decoding, Writer]] = field(default_factory=dict)

    def writer(self, decoding: Decoding | None) -> Writer | None:
        """The leaf writer of rows, or of raw records with ``decoding``."""
        if decoding is None or self.write_leaves is None:
            return self.write_leaves
        entry = self.raw_writers.get(id(decoding))
        if entry is None or entry[0] is not decoding:
            if len(self.raw_writers) >= _RAW_WRITERS:  # statements evicted and rebuilt
                self.raw_writers.clear()
            writer = leaf_writer(self.leaves, NullValue, decoding.decoders)
            entry = self.raw_writers[id(decoding)] = (decoding, writer)
        return entry[1]


@dataclass(slots=True)
class EdgePlan:
    template: dict[str, Any] = field(default_factory=dict)
    cursor_keys: list[str] = field(default_factory=list)
    nodes: list[tuple[str, ObjectPlan]] = field(default_factory=list)


@dataclass(slots=True)
class PageInfoPlan:
    template: dict[str, Any] = field(default_factory=dict)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (key, field name)


@dataclass(slots=True)
class ConnectionPlan:
    template: dict[str, Any] = field(default_factory=dict)
    total_keys: list[str] = field(default_factory=list)
    edges: list[tuple[str, EdgePlan]] = field(default_factory=list)
    nodes: list[tuple[str, ObjectPlan]] = field(default_factory=list)
    page_infos: list[tuple[str, PageInfoPlan]] = field(default_factory=list)

    @property
    def node_plans(self) -> list[ObjectPlan]:
        """The node selections, in the order the runner builds them per page."""
        return [p for _, p in self.nodes] + [p for _, e in self.edges for _, p in e.nodes]

    @property
    def columns(self) -> set[str]:
        """Row columns the connection's node selections read (ids for cursors)."""
        return {"id"}.union(*(p.columns for p in self.node_plans))

    @property
    def needs_cursors(self) -> bool:
        return any(e.cursor_keys for _, e in self.edges) or any(
            name in ("startCursor", "endCursor")
            for _, p in self.page_infos
            for _, name in p.entries
        )


@dataclass(frozen=True, slots=True)
class RelationPlan:
    key: str
    fetch: Fetch
    field_def: GraphQLField
    strawberry_field: StrawberryField
    node: FieldNode
    non_null: bool
    child: ObjectPlan | ConnectionPlan
    # The columns the rows must carry when the fetch can narrow its read (None: all).
    columns: frozenset[str] | None = None
    # Arguments written without variables convert the same way in every run: the
    # first run's conversion is kept here (never mutated by the runner).
    static_arguments: bool = False
    converted: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    root: ObjectPlan
    variable_definitions: tuple[VariableDefinitionNode, ...]
    roles: frozenset[Role]  # every role a field of the document requires


def compile_plan(schema: Any, document: DocumentNode, operation_name: str | None) -> Plan | None:
    """The plan of ``operation_name`` in ``document`` (validated), or None."""
    try:
        return _Compiler(schema, document).operation(operation_name)
    except Unsupported:
        return None


class _Compiler:
    def __init__(self, schema: Any, document: DocumentNode) -> None:
        self.strawberry = schema
        self.schema: GraphQLSchema = schema._schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.operations = [
            d for d in document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        self.roles: set[Role] = set()

    def operation(self, name: str | None) -> Plan:
        if name is None:
            if len(self.operations) != 1:
                raise Unsupported
            operation = self.operations[0]
        else:
            matches = [o for o in self.operations if o.name and o.name.value == name]
            if len(matches) != 1:
                raise Unsupported
            operation = matches[0]
        if operation.operation is not OperationType.QUERY or operation.directives:
            raise Unsupported
        query_type = self.schema.query_type
        if query_type is None:
            raise Unsupported
        root = self.object(query_type, [operation.selection_set])
        return Plan(root, tuple(operation.variable_definitions or ()), frozenset(self.roles))

    # --- selections ---------------------------------------------------------------

    def collect(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode | None]
    ) -> dict[str, list[FieldNode]]:
        """Fields by response key in first-seen order, as graphql-core collects them."""
        fields: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selection_sets:
            self._walk(selection_set, type_, fields, visited)
        return fields

    def _walk(
        self,
        selection_set: SelectionSetNode | None,
        type_: GraphQLObjectType,
        fields: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        # A method, not a closure calling itself: that would be a reference cycle per
        # compiled document.
        if selection_set is None:
            raise Unsupported
        for selection in selection_set.selections:
            if selection.directives:
                raise Unsupported
            if isinstance(selection, FieldNode):
                key = (selection.alias or selection.name).value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if self.applies(selection.type_condition, type_):
                    self._walk(selection.selection_set, type_, fields, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is None or fragment.directives:
                    raise Unsupported
                if self.applies(fragment.type_condition, type_):
                    self._walk(fragment.selection_set, type_, fields, visited)
            else:
                raise Unsupported

    def applies(self, condition: Any, type_: GraphQLObjectType) -> bool:
        if condition is None:
            return True
        named = self.schema.get_type(condition.name.value)
        if named is None:
            raise Unsupported
        if named is type_:
            return True
        return bool(
            isinstance(named, GraphQLNamedType)
            and not isinstance(named, GraphQLObjectType)
            and self.schema.is_sub_type(named, type_)  # type: ignore[arg-type]
        )

    # --- object types -------------------------------------------------------------

    def object(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode | None]
    ) -> ObjectPlan:
        name = type_.name
        if name not in ROW_TYPES and type_ is not self.schema.query_type:
            raise Unsupported
        plan = ObjectPlan(name)
        leaves: list[LeafSpec] = []
        definition = self.strawberry.get_type_by_name(name)
        if not isinstance(definition, StrawberryObjectDefinition):
            raise Unsupported
        by_name = {self._graphql_name(f): f for f in definition.fields}
        plan.columns.add("id")  # rows are told apart (and keyed) by it
        for key, nodes in self.collect(type_, selection_sets).items():
            field_name = nodes[0].name.value
            plan.template[key] = None
            if field_name == "__typename":
                plan.template[key] = name
                continue
            field_def = type_.fields.get(field_name)
            strawberry_field = by_name.get(field_name)
            if field_def is None or strawberry_field is None:
                raise Unsupported
            self.check_permissions(strawberry_field)
            if field_name == "id" and name in ROW_TYPES:
                at_id = _position(name, "id")
                leaves.append((key, at_id, GlobalIdOf(name), True))
            elif field_name == "databaseId" and name in ROW_TYPES:
                leaves.append((key, _position(name, "id"), serializer(GraphQLInt), True))
            elif strawberry_field.base_resolver is None and name in ROW_TYPES:
                if nodes[0].arguments:
                    raise Unsupported
                leaf_type, non_null = _unwrap(field_def.type)
                if not isinstance(leaf_type, GraphQLScalarType | GraphQLEnumType):
                    raise Unsupported
                at = _position(name, strawberry_field.python_name)
                plan.columns.add(strawberry_field.python_name)
                leaves.append((key, at, serializer(leaf_type), non_null))
            else:
                plan.relations.append(self.relation(name, key, nodes, field_def, strawberry_field))
        plan.columns.update(r.fetch.parent for r in plan.relations if r.fetch.parent)
        if leaves:
            plan.leaves = tuple(leaves)
            plan.write_leaves = leaf_writer(leaves, NullValue)
        return plan

    def relation(
        self,
        parent: str,
        key: str,
        nodes: list[FieldNode],
        field_def: GraphQLField,
        strawberry_field: StrawberryField,
    ) -> RelationPlan:
        fetch = FETCHES.get(f"{parent}.{nodes[0].name.value}")
        if fetch is None:
            raise Unsupported
        named, non_null = _unwrap(field_def.type)
        selection_sets = [n.selection_set for n in nodes]
        child: ObjectPlan | ConnectionPlan
        if fetch.kind == "page":
            if not isinstance(named, GraphQLObjectType):
                raise Unsupported
            child = self.connection(named, selection_sets, fetch.target)
        else:
            target = self.schema.get_type(fetch.target)
            if not isinstance(target, GraphQLObjectType) or named is not target:
                raise Unsupported
            child = self.object(target, selection_sets)
        columns = frozenset(child.columns) if fetch.narrow is not None else None
        static = not any(_has_variable(a.value) for a in nodes[0].arguments or ())
        return RelationPlan(
            key, fetch, field_def, strawberry_field, nodes[0], non_null, child, columns, static
        )

    def check_permissions(self, strawberry_field: StrawberryField) -> None:
        for extension in strawberry_field.extensions:
            if not isinstance(extension, PermissionExtension):
                raise Unsupported
            for permission in extension.permissions:
                if not isinstance(permission, RolePermission):
                    raise Unsupported
                self.roles.add(permission.role)

    # --- connections --------------------------------------------------------------

    def connection(
        self,
        type_: GraphQLObjectType,
        selection_sets: Iterable[SelectionSetNode | None],
        target: str,
    ) -> ConnectionPlan:
        plan = ConnectionPlan()
        node_type = self.schema.get_type(target)
        if not isinstance(node_type, GraphQLObjectType):
            raise Unsupported
        for key, nodes in self.collect(type_, selection_sets).items():
            name = nodes[0].name.value
            plan.template[key] = None
            sets = [n.selection_set for n in nodes]
            if name == "__typename":
                plan.template[key] = type_.name
            elif name == "totalCount":
                plan.total_keys.append(key)
            elif name == "nodes":
                plan.nodes.append((key, self.object(node_type, sets)))
            elif name == "edges":
                plan.edges.append((key, self.edge(_field_type(type_, name), sets, node_type)))
            elif name == "pageInfo":
                plan.page_infos.append((key, self.page_info(_field_type(type_, name), sets)))
            else:
                raise Unsupported
        return plan

    def edge(
        self,
        type_: GraphQLObjectType,
        selection_sets: Iterable[SelectionSetNode | None],
        node_type: GraphQLObjectType,
    ) -> EdgePlan:
        plan = EdgePlan()
        for key, nodes in self.collect(type_, selection_sets).items():
            name = nodes[0].name.value
            plan.template[key] = None
            if name == "__typename":
                plan.template[key] = type_.name
            elif name == "cursor":
                plan.cursor_keys.append(key)
            elif name == "node":
                sets = [n.selection_set for n in nodes]
                plan.nodes.append((key, self.object(node_type, sets)))
            else:
                raise Unsupported
        return plan

    def page_info(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode | None]
    ) -> PageInfoPlan:
        plan = PageInfoPlan()
        for key, nodes in self.collect(type_, selection_sets).items():
            name = nodes[0].name.value
            plan.template[key] = None
            if name == "__typename":
                plan.template[key] = type_.name
            elif name in ("hasNextPage", "hasPreviousPage", "startCursor", "endCursor"):
                plan.entries.append((key, name))
            else:
                raise Unsupported
        return plan

    def _graphql_name(self, f: StrawberryField) -> str:
        return str(self.strawberry.config.name_converter.get_graphql_name(f))


def _position(type_name: str, column: str) -> int:
    """Where ``column`` is in a row of ``type_name``; a field that is not a column
    (it would need its own resolver) is unsupported."""
    try:
        return ROW_COLUMNS[type_name].index(column)
    except ValueError:
        raise Unsupported from None


def _has_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_has_variable(v) for v in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_has_variable(f.value) for f in value.fields)
    return False


def _unwrap(type_: GraphQLOutputType) -> tuple[Any, bool]:
    """The named type of a field and whether it is non-null (lists only as the
    connection's and relations' own, which the runner builds)."""
    non_null = isinstance(type_, GraphQLNonNull)
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    while hasattr(inner, "of_type"):
        inner = inner.of_type
    return inner, non_null


def _field_type(type_: GraphQLObjectType, name: str) -> GraphQLObjectType:
    named, _ = _unwrap(type_.fields[name].type)
    if not isinstance(named, GraphQLObjectType):
        raise Unsupported
    return named

"""GraphQL object types; separate from the tables, built with from_row()."""

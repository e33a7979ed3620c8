"""Mutations: one input, a payload with the object and errors: [UserError!]!."""

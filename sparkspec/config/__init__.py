"""The spec language: YAML with positions, the schema, templates, the resolved model."""

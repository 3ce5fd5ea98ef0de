"""The pipeline language: YAML with positions, Pydantic schema, semantic validation, the resolved IR."""

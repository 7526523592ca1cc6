"""One module per rule, in check order. Each exposes NAME ("<n> <slug>"), SUMMARY (one line),
check(...) -> list[str] over plain data, and self_test() -> list[str] (failures; empty = OK)."""

from . import (
    domain_edges,
    domain_tech,
    layers,
    lints,
    no_sql_outside_domains,
    node_agent_tree,
    one_e2e_binary,
    resource_names,
    sql_ownership,
    thin_handlers,
    vocabulary,
    where_a_change_goes,
    workflow_determinism,
)

RULES = (
    layers,
    domain_tech,
    domain_edges,
    node_agent_tree,
    sql_ownership,
    no_sql_outside_domains,
    workflow_determinism,
    thin_handlers,
    where_a_change_goes,
    vocabulary,
    lints,
    one_e2e_binary,
    resource_names,
)

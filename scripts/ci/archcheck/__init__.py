"""The architecture check (scripts/ci/check-architecture): layout.py is the architecture as data,
model.py loads the workspace, lexers.py reads Rust and SQL, rules/ holds one module per rule."""

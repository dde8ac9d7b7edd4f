"""Docs tests: README.md against the real CLIs (every shell command parses or runs) and its
Install block run as written in a fresh clone (root, Debian's python3; CI runs it)."""

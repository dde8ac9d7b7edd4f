"""Peer drivers: each kind of WireGuard implementation the harness can run, and its registry."""

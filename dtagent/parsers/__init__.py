"""Parsers of platform command output (pure functions of text; no OS access)."""

"""Outer loops: evolution strategies (es) and the shared episode objective."""

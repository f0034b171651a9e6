"""Paper numbers, result tables and figures."""

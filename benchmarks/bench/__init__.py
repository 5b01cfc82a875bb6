"""The benchmark's parts: the origin, the tools, one module per case, the report.

Kept apart so that a case reads as what it measures, and every helper it needs (starting
workers, timing a download, checking a SHA-256) exists once and is shared.
"""

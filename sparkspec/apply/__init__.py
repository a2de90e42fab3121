"""Executing a plan: the engine walks the graph, tasks carry one render, outputs materialise files."""

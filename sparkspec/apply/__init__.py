"""Executing a plan: the engine, its journal, outputs and the apply command."""

"""Model families as plugins: everything that differs between LLaVA-1.5/NeXT and other VLM families (loading, batch
building, the vision tower, positions, rotary embedding, FLOPs shapes, image grids) behind one interface.

This package file stays import-free: the engine imports `families.positions` and must not pull in the families
themselves (they import the engine's callers).
"""

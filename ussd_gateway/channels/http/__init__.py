"""HTTP gateway dialects: each turns one wire format into a `Hop` and a `Reply` back.

A new gateway dialect is one module here (with `parse` and `render`) and its tests;
the dispatcher and the menus never change for it.
"""

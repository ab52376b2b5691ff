"""Sans-I/O protocol parsers: bytes in, plain objects out; no globals, no printing.

Every binary parser reads through :class:`iocwatch.protocols.cursor.Cursor`, which raises
:class:`Malformed` (and only that) on short or impossible input.
"""

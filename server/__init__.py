"""planegate's surface: the MCP server (``app``) and the command line (``cli``)."""

__version__ = "0.1.0"

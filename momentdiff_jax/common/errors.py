"""The error every input check raises: its message names the file, line, field or shape."""


class DataError(ValueError):
  """A bad input file, row or field (the message names it)."""

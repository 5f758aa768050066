"""The Faust agents of the risk processor, one module each, sharing ``context.Context``."""

"""The status page: condition history per deployment, availability, day bars, badges, feeds and HTML views."""

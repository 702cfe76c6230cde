class KnowledgeBaseError(Exception):
    """A database problem the user can't fix; shown with an error id."""


class NotFound(KnowledgeBaseError):
    pass


class Conflict(KnowledgeBaseError):
    """The write collides with existing data (a duplicate key, a broken reference)."""


class Unavailable(KnowledgeBaseError):
    """The database could not be reached or is locked for too long."""
